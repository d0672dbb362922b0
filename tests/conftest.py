"""Shared fixtures: small Cu/EMT data, a CuAu alloy, and small fitted models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit import SOAP, GAPRegressor
from gapkit.datasets import load_cu_emt

#: Reference data beside the repository (absent in a fresh clone).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def small_soap(**kwargs) -> SOAP:
    params = dict(r_cut=3.5, n_max=4, l_max=3, sigma=0.5)
    params.update(kwargs)
    return SOAP(**params)


def labelled(atoms):
    """A copy of ``atoms`` labelled with EMT in a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if all(atoms.pbc):
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture(scope="session")
def cu_data():
    return load_cu_emt()


@pytest.fixture(scope="session")
def cuau_frames():
    """Twelve rattled CuAu alloy cells (16 atoms), labelled with EMT."""
    rng = np.random.default_rng(3)
    frames = []
    for k in range(12):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 1, 2))
        symbols = np.array(["Cu"] * len(atoms))
        symbols[rng.choice(len(atoms), 6 + k % 3, replace=False)] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.rattle(0.08, seed=k)
        atoms.set_cell(atoms.cell.array * (1 + rng.uniform(-0.02, 0.02)), scale_atoms=True)
        frames.append(labelled(atoms))
    return frames


@pytest.fixture(scope="session")
def cu_model(cu_data):
    train, _ = cu_data
    return GAPRegressor(small_soap(), n_sparse=60, random_state=0).fit(train[:12])


@pytest.fixture(scope="session")
def cuau_model(cuau_frames):
    return GAPRegressor(small_soap(), n_sparse=40, random_state=0).fit(cuau_frames)
