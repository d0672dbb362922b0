"""Validation at the public boundary: labels, parameters, species, cells.

Regression tests for issue 12, cases 2, 3, 4, 5, 6 (GAP cell check) and 10; each
pins the message, which names the problem, the key and the structure index.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import CalculatorSetupError
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import labelled, small_soap
from sklearn.exceptions import NotFittedError

from gapkit import SOAP, GAPCalculator, GAPRegressor
from gapkit.active import select_batch
from gapkit.exceptions import (
    InvalidLabelError,
    InvalidParameterError,
    InvalidStructureError,
    LabelWarning,
    MissingLabelError,
    UnknownSpeciesError,
)


def _info_labelled(frames):
    """Copies with labels in info/arrays (no calculator), under custom keys."""
    out = []
    for a in frames:
        b = a.copy()
        b.calc = None
        b.info["my_energy"] = a.get_potential_energy()
        b.arrays["my_forces"] = a.get_forces()
        b.info["my_stress"] = a.get_stress()
        out.append(b)
    return out


# ------------------------------------------------------------------ case 2
def test_case2_nan_energy_in_y_names_the_structure(cuau_frames):
    y = [a.get_potential_energy() for a in cuau_frames[:4]]
    y[2] = np.nan
    with pytest.raises(InvalidLabelError, match=r"y\[2\] \(the energy of structure 2\)"):
        GAPRegressor(small_soap(), n_sparse=10).fit(cuau_frames[:4], y=y)


@pytest.mark.parametrize(
    "y, match",
    [([1.0, 2.0], r"shape \(2,\); expected \(4,\)"), (["a", "b", "c", "d"], "must be numbers")],
)
def test_case2_y_of_wrong_shape_or_type(cuau_frames, y, match):
    with pytest.raises(InvalidLabelError, match=match):
        GAPRegressor(small_soap(), n_sparse=10).fit(cuau_frames[:4], y=y)


@pytest.mark.parametrize(
    "e0", [{"Cu": np.nan, "Au": 0.0}, {"Cu": np.inf, "Au": 0.0}, {"Cu": "x", "Au": 0.0}]
)
def test_case2_non_finite_e0_is_refused(cuau_frames, e0):
    with pytest.raises(InvalidParameterError, match="'e0' must be"):
        GAPRegressor(small_soap(), n_sparse=10, e0=e0).fit(cuau_frames[:4])


def test_case2_nan_force_label_names_key_and_structure(cuau_frames):
    frames = _info_labelled(cuau_frames[:3])
    frames[1].arrays["my_forces"][3, 1] = np.nan
    with pytest.raises(InvalidLabelError, match=r"structure 1: the forces \('my_forces'\) is NaN"):
        GAPRegressor(small_soap(), n_sparse=10, energy_key="my_energy", forces_key="my_forces").fit(
            frames
        )


# ------------------------------------------------------------------ case 3
def test_case3_species_listed_but_not_trained_is_refused(cuau_frames):
    model = GAPRegressor(small_soap(species=["Cu", "Ag", "Au"]), n_sparse=10)
    model.fit(cuau_frames[:3])
    with_ag = cuau_frames[3].copy()
    with_ag.symbols[0] = "Ag"
    msg = r"structure 0 contains Ag.*Ag is in the descriptor's species but had no training"
    with pytest.raises(UnknownSpeciesError, match=msg):
        model.predict([with_ag])
    with pytest.raises(UnknownSpeciesError, match=msg):
        model.predict([with_ag], return_std=True)
    with pytest.raises(UnknownSpeciesError, match=msg):
        model.predict_forces([with_ag], return_std=True)
    calc = model.calculator()
    with_ag.calc = calc
    with pytest.raises(CalculatorSetupError, match="Ag"):
        with_ag.get_potential_energy()
    # structures of the trained species still work
    assert np.isfinite(model.predict(cuau_frames[3:4], return_std=True)[1]).all()


def test_case3_unknown_species_names_the_structure(cuau_model, cuau_frames):
    other = cuau_frames[0].copy()
    other.symbols[2] = "Ni"
    with pytest.raises(UnknownSpeciesError, match="structure 1 contains Ni"):
        cuau_model.predict([cuau_frames[1], other])


# ------------------------------------------------------------------ case 4
def test_case4_key_typos_are_errors(cuau_frames):
    frames = _info_labelled(cuau_frames[:3])
    for kwargs, match in (
        (
            {"energy_key": "my_enrgy"},
            "energy_key='my_enrgy' is not in "
            r"atoms.info of any structure \(keys found: .*my_energy",
        ),
        ({"forces_key": "my_frces"}, "forces_key='my_frces' is not in atoms.arrays"),
        ({"stress_key": "stres"}, "stress_key='stres'"),
    ):
        with pytest.raises(MissingLabelError, match=match):
            GAPRegressor(small_soap(), n_sparse=10, **kwargs).fit(frames)


def test_case4_forces_only_fit_warns_about_e0(cuau_frames):
    frames = []
    for a in cuau_frames[:3]:
        b = a.copy()
        b.calc = SinglePointCalculator(b, forces=a.get_forces())
        frames.append(b)
    with pytest.warns(LabelWarning, match="no structure has an energy label"):
        model = GAPRegressor(small_soap(), n_sparse=10).fit(frames)
    assert model.e0_ == {"Cu": 0.0, "Au": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e0 given: nothing to warn about
        GAPRegressor(small_soap(), n_sparse=10, e0={"Cu": -0.1, "Au": -0.2}).fit(frames)


# ------------------------------------------------------------------ case 5
def test_case5_calculator_parameters_live_in_parameters(cuau_model, cuau_frames):
    atoms = cuau_frames[0].copy()
    calc = cuau_model.calculator()
    atoms.calc = calc
    assert calc.todict() == {"uncertainty": False, "device": None}
    atoms.get_potential_energy()
    assert "forces_std" not in calc.results
    calc.set(uncertainty=True)
    atoms.get_potential_energy()
    assert "forces_std" in calc.results and "energy_std" in calc.results
    assert calc.todict()["uncertainty"] is True
    again = GAPCalculator(cuau_model, **calc.todict())
    assert again.parameters["uncertainty"] is True


def test_case5_calculator_follows_partial_fit(cuau_frames):
    model = GAPRegressor(small_soap(), n_sparse=15).fit(cuau_frames[:3])
    atoms = cuau_frames[10].copy()
    atoms.calc = model.calculator()
    old = atoms.get_potential_energy()
    model.partial_fit(cuau_frames[3:9])
    new = atoms.get_potential_energy()
    assert new != old
    assert new == pytest.approx(model.predict([atoms])[0], abs=1e-12)


def test_case10_unfitted_model_gives_clear_errors(cuau_frames):
    with pytest.raises(NotFittedError, match="not fitted"):
        GAPRegressor().predict(cuau_frames[:1])
    with pytest.raises(CalculatorSetupError, match="GAPCalculator: the model is not fitted"):
        GAPRegressor().calculator()
    with pytest.raises(InvalidParameterError, match="select_batch: the model is not fitted"):
        select_batch(GAPRegressor(), cuau_frames[:3], 1)


# ----------------------------------------------------------------- case 10
def _bulk_labelled():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    return labelled(atoms)


def test_case10_virial_as_six_voigt_values_equals_the_tensor():
    from gapkit._validation import read_labels

    atoms = _bulk_labelled()
    stress = atoms.get_stress()
    virial9 = -atoms.get_stress(voigt=False) * atoms.get_volume()
    a9, a6 = atoms.copy(), atoms.copy()
    a9.info["virial"] = virial9
    a6.info["virial"] = -stress * atoms.get_volume()
    np.testing.assert_allclose(read_labels(a9).stress, stress, rtol=1e-12)
    np.testing.assert_allclose(read_labels(a6).stress, stress, rtol=1e-12)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("stress", [1.0, 2.0, 3.0, 4.0], r"stress \('stress'\) must have 6 .* got shape \(4,\)"),
        ("virial", [1.0, 2.0, 3.0, 4.0, 5.0], r"virial \('virial'\) must have 6"),
        ("energy", "minus three", r"energy \('energy'\) is not a number"),
        ("energy", [1.0, 2.0], r"energy \('energy'\) must be one number"),
    ],
)
def test_case10_malformed_labels_name_key_and_structure(key, value, match):
    frames = [_bulk_labelled() for _ in range(3)]
    for a in frames:
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
    frames[2].info[key] = value
    with pytest.raises(InvalidLabelError, match="GAPRegressor.fit: structure 2: the " + match):
        GAPRegressor(small_soap(), n_sparse=5).fit(frames)


def test_case10_forces_of_the_wrong_shape():
    from gapkit._validation import read_training_labels

    atoms = _bulk_labelled()
    atoms.calc = None
    atoms.info["energy"] = 1.0
    atoms.new_array("short", np.zeros((len(atoms), 2)))
    with pytest.raises(
        InvalidLabelError, match=r"structure 0: the forces \('short'\) must have shape \(4, 3\)"
    ):
        read_training_labels([atoms], None, (None, "short", None), "GAPRegressor.fit")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"delta": np.inf}, "'delta' must be a positive number <= 1e"),
        ({"delta": 1e200}, "'delta' must be a positive number <= 1e"),
        ({"delta": {"Cu": 1.0, "Au": -1.0}}, "'delta' must be"),
        ({"sigma_force": np.nan}, "'sigma_force' must be a positive finite"),
        ({"zeta": 2.5}, "'zeta' must be an integer"),
        ({"zeta": True}, "'zeta' must be an integer"),
        ({"n_sparse": 0}, "'n_sparse' must be an integer >= 1"),
        ({"jitter": np.inf}, "'jitter' must be a number in"),
        ({"random_state": -1}, "'random_state' must be"),
        (
            {"config_type_sigma": {"slab": {"force": 0.0}}},
            r"config_type_sigma\['slab'\]\['force'\]",
        ),
        ({"config_type_sigma": {"slab": {"forse": 0.1}}}, r"config_type_sigma'\]\['slab'\]|keys"),
    ],
)
def test_case10_bad_parameters(cuau_frames, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        GAPRegressor(small_soap(), **{"n_sparse": 5, **params}).fit(cuau_frames[:2])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"r_cut": np.inf}, "'r_cut' must be a positive number of Å, at most 50"),
        ({"r_cut": np.nan}, "'r_cut'"),
        ({"sigma": np.inf}, "'sigma'"),
    ],
)
def test_case10_bad_descriptor(cuau_frames, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        GAPRegressor(SOAP(**{"n_max": 3, "l_max": 2, **params}), n_sparse=5).fit(cuau_frames[:2])


def test_case10_bad_per_structure_sigma_names_the_structure(cuau_frames):
    frames = [a.copy() for a in cuau_frames[:3]]
    for a, b in zip(frames, cuau_frames[:3], strict=True):
        a.calc = b.calc
    frames[1].info["force_sigma"] = "small"
    with pytest.raises(InvalidParameterError, match=r"structure 1: info\['force_sigma'\]"):
        GAPRegressor(small_soap(), n_sparse=5).fit(frames)


# ---------------------------------------------------- case 6 (the GAP's check)
def test_case6_long_and_skewed_cells_are_valid():
    """A 2.5 x 2.5 x 3000 Å cell and a skewed basis of the same lattice as a cubic
    cell are accepted, and the skewed description gives the same energy."""
    cube = bulk("Cu", "fcc", a=3.6, cubic=True)
    cube.rattle(0.05, seed=2)
    cells = [labelled(cube)]
    skew = cube.copy()
    a1, a2, a3 = cube.cell.array
    skew.set_cell([a1, a2 + 7 * a1, a3 + 5 * a1 - 9 * a2], scale_atoms=False)
    skew.wrap()
    model = GAPRegressor(small_soap(), n_sparse=4, e0="zero").fit(cells)
    e_cube, e_skew = model.predict([cube, skew])
    assert e_skew == pytest.approx(e_cube, abs=1e-9)
    long = Atoms(
        "Cu2", positions=[[0, 0, 0], [1.25, 1.25, 1500.0]], cell=[2.5, 2.5, 3000], pbc=True
    )
    assert np.isfinite(model.predict([long])[0])
    flat = Atoms("Cu", cell=[[2.5, 0, 0], [5.0, 0, 0], [0, 0, 2.5]], pbc=True)
    with pytest.raises(InvalidStructureError, match="structure 0 is periodic .* zero volume"):
        model.predict([flat])


def test_emt_labels_are_what_the_fixture_says():
    """Guard for the helpers above: the fixture labels are EMT's."""
    atoms = _bulk_labelled()
    ref = atoms.copy()
    ref.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
