"""Bad input gets a clear error naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from conftest import labelled, small_soap

from gapkit import GAPRegressor
from gapkit.exceptions import InvalidStructureError, MissingLabelError, UnknownSpeciesError


def test_unknown_species_at_predict(cu_model):
    with pytest.raises(UnknownSpeciesError, match="contains Au"):
        cu_model.predict([bulk("Au")])


def test_structures_without_labels():
    frames = [labelled(bulk("Cu", cubic=True)), bulk("Cu", cubic=True)]
    with pytest.raises(MissingLabelError, match="structure 1"):
        GAPRegressor(small_soap()).fit(frames)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_positions(cu_model, value):
    atoms = bulk("Cu", cubic=True)
    atoms.positions[2, 1] = value
    with pytest.raises(InvalidStructureError, match="NaN or infinite positions"):
        cu_model.predict([atoms])
    with pytest.raises(InvalidStructureError, match="structure 0"):
        GAPRegressor(small_soap()).fit([atoms])


def test_zero_volume_cell(cu_model):
    atoms = bulk("Cu", cubic=True)
    atoms.cell[2] = [0, 0, 0]
    with pytest.raises(InvalidStructureError, match="zero volume"):
        cu_model.predict([atoms])


def test_empty_data_set():
    with pytest.raises(InvalidStructureError, match="empty"):
        GAPRegressor(small_soap()).fit([])
    with pytest.raises(InvalidStructureError, match="no atoms"):
        GAPRegressor(small_soap()).fit([Atoms()])


def test_overlapping_atoms(cu_model):
    atoms = bulk("Cu", cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.05, 0, 0]
    with pytest.raises(InvalidStructureError, match="atoms 0 and 1 overlap"):
        cu_model.predict([atoms])


def test_unfitted_model_and_not_atoms(cu_model):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GAPRegressor().predict([bulk("Cu")])
    with pytest.raises(InvalidStructureError, match="not an ase.Atoms"):
        cu_model.predict([np.zeros((3, 3))])


def test_molecule_is_fine_in_fit():
    frames = [labelled(molecule("H2O"))]
    frames[0].info["config_type"] = "molecule"
    # EMT labels water; a molecule has no stress, fitting must work without it
    model = GAPRegressor(small_soap(), n_sparse=5, random_state=0).fit(frames)
    assert model.n_observations_["virial"] == 0
