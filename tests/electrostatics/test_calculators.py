"""The ASE calculators: charges, Coulomb, caching, serialisation and error messages."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculatorSetupError, PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces

from gapkit.electrostatics import PME, Coulomb, Ewald, calculator_from_dict
from gapkit.exceptions import InvalidParameterError, InvalidStructureError, NonNeutralWarning
from gapkit.units import COULOMB_CONSTANT

NACL = {"Na": 1.0, "Cl": -1.0}


def nacl(repeat=1):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=2)
    return atoms


# ---------------------------------------------------------------- charges


@pytest.mark.parametrize("method", [Ewald, PME])
def test_charges_dict_array_and_initial_charges_agree(method):
    atoms = nacl()
    per_atom = np.where(atoms.numbers == 11, 1.0, -1.0)
    atoms.calc = method(charges=NACL, accuracy=1e-6)
    e_dict = atoms.get_potential_energy()
    atoms.calc = method(charges=per_atom, accuracy=1e-6)
    e_array = atoms.get_potential_energy()
    atoms.set_initial_charges(per_atom)
    atoms.calc = method(accuracy=1e-6)
    e_initial = atoms.get_potential_energy()
    assert e_dict == e_array == e_initial


def test_calculator_does_not_change_its_inputs():
    charges = {"Na": 1.0, "Cl": -1.0}
    calc = PME(charges=charges)
    atoms = nacl()
    atoms.calc = calc
    atoms.get_forces()
    assert charges == {"Na": 1.0, "Cl": -1.0}
    assert calc.parameters["mesh"] is None and calc.parameters["alpha"] is None


def test_results_are_cached_and_refreshed():
    atoms = nacl()
    atoms.calc = PME(charges=NACL)
    e1 = atoms.get_potential_energy()
    tuned = atoms.calc.tuned_
    atoms.get_forces()
    assert atoms.calc.tuned_ is tuned  # no second calculation
    atoms.positions[0] += 0.1
    assert atoms.get_potential_energy() != e1


def test_all_properties_and_units():
    atoms = nacl()
    atoms.calc = Ewald(charges=NACL, accuracy=1e-8)
    assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stress(voigt=False).shape == (3, 3)
    assert atoms.get_potential_energies().shape == (8,)
    # unrattled NaCl: per-ion energy -k_e M / (2 d)
    ideal = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    ideal.calc = Ewald(charges=NACL, accuracy=1e-10)
    expected = -COULOMB_CONSTANT * 1.7475645946332 / 5.64
    np.testing.assert_allclose(ideal.get_potential_energies(), expected, rtol=1e-9)


# ---------------------------------------------------------------- Coulomb


def test_coulomb_pair_and_forces():
    mol = molecule("H2O")
    mol.calc = Coulomb(charges={"O": -0.8, "H": 0.4})
    d = mol.get_all_distances()
    q = np.array([-0.8, 0.4, 0.4])
    expected = COULOMB_CONSTANT * sum(
        q[i] * q[j] / d[i, j] for i in range(3) for j in range(i + 1, 3)
    )
    assert mol.get_potential_energy() == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(mol.get_forces(), calculate_numerical_forces(mol, 1e-5), atol=1e-7)
    assert mol.get_potential_energies().sum() == pytest.approx(expected, rel=1e-13)
    with pytest.raises(PropertyNotImplementedError):
        mol.get_stress()


def test_ewald_of_isolated_pair_in_large_box_approaches_coulomb():
    pair = Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.5]])
    pair.calc = Coulomb(charges=NACL)
    e_free = pair.get_potential_energy()
    boxed = pair.copy()
    boxed.set_cell(np.eye(3) * 60.0)
    boxed.pbc = True
    boxed.calc = PME(charges=NACL, accuracy=1e-7)
    # dipole-dipole image interaction ~ k_e p² / L³ ≈ 4e-4 eV
    assert boxed.get_potential_energy() == pytest.approx(e_free, abs=2e-3)


# ---------------------------------------------------------------- serialisation


@pytest.mark.parametrize(
    "calc",
    [
        PME(charges=NACL, accuracy=1e-6, order=5, mesh=(20, 20, 21), workers=1),
        PME(charges=np.array([1.0, -1.0] * 4), alpha=0.3, cutoff=9.0),
        Ewald(charges=NACL, accuracy=1e-7, kcutoff=1.0),
        Ewald(),
        Coulomb(charges={"Na": 0.9, "Cl": -0.9}),
    ],
)
def test_todict_round_trip_through_json(calc):
    d = json.loads(json.dumps(calc.todict()))
    assert d["class"] == type(calc).__name__
    again = calculator_from_dict(d)
    assert type(again) is type(calc)
    assert again.todict() == d
    atoms = nacl()
    if isinstance(calc, Coulomb):
        atoms.pbc = False
    atoms.set_initial_charges(np.where(atoms.numbers == 11, 1.0, -1.0))
    atoms.calc = calc
    e1 = atoms.get_potential_energy()
    atoms.calc = again
    assert atoms.get_potential_energy() == pytest.approx(e1, rel=1e-12)


def test_calculator_from_dict_rejects_unknown_class():
    with pytest.raises(InvalidParameterError, match="'class' must be one of .*'Ewald'.*got 'LJ'"):
        calculator_from_dict({"class": "LJ"})
    with pytest.raises(InvalidParameterError, match="got 'list'"):
        calculator_from_dict([1, 2])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("method", [Ewald, PME])
def test_nan_positions(method):
    atoms = nacl()
    atoms.positions[3, 1] = np.nan
    atoms.calc = method(charges=NACL)
    with pytest.raises(InvalidStructureError, match=r"NaN or infinite values \(atoms \[3\]\)"):
        atoms.get_potential_energy()


def test_nan_positions_coulomb():
    mol = molecule("H2O")
    mol.positions[0, 0] = np.inf
    mol.calc = Coulomb(charges={"O": -0.8, "H": 0.4})
    with pytest.raises(InvalidStructureError, match="NaN or infinite"):
        mol.get_forces()


@pytest.mark.parametrize("method", [Ewald, PME])
@pytest.mark.parametrize("pbc", [False, (True, True, False)])
def test_non_periodic_structure_points_to_coulomb(method, pbc):
    atoms = nacl()
    atoms.pbc = pbc
    atoms.calc = method(charges=NACL)
    with pytest.raises(InvalidStructureError, match="pbc all True.*Use Coulomb for molecules"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("method", [Ewald, PME])
def test_zero_volume_cell(method):
    atoms = nacl()
    atoms.cell[2] = atoms.cell[0] + atoms.cell[1]  # coplanar vectors
    atoms.calc = method(charges=NACL)
    with pytest.raises(InvalidStructureError, match="zero volume.*Use Coulomb for molecules"):
        atoms.get_potential_energy()


def test_molecule_without_cell_in_pme():
    mol = molecule("H2O", pbc=True)  # a periodic system with no cell
    mol.calc = PME(charges={"O": -0.8, "H": 0.4})
    with pytest.raises(InvalidStructureError, match="zero volume"):
        mol.get_potential_energy()


def test_coulomb_refuses_periodic_cells():
    atoms = nacl()
    atoms.calc = Coulomb(charges=NACL)
    with pytest.raises(InvalidStructureError, match="non-periodic systems.*Use Ewald or PME"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("method", [Ewald, PME])
def test_overlapping_atoms(method):
    atoms = nacl()
    atoms.positions[1] = atoms.positions[0]
    atoms.calc = method(charges=NACL)
    with pytest.raises(InvalidStructureError, match="same position"):
        atoms.get_potential_energy()


def test_missing_species_charge():
    atoms = nacl()
    atoms.calc = PME(charges={"Na": 1.0})
    with pytest.raises(CalculatorSetupError, match=r"no charge given for species \['Cl'\]"):
        atoms.get_potential_energy()


def test_wrong_number_of_charges():
    atoms = nacl()
    atoms.calc = Ewald(charges=[1.0, -1.0])
    with pytest.raises(InvalidParameterError, match=r"shape \(8,\) .* got shape \(2,\)"):
        atoms.get_potential_energy()


def test_non_neutral_warning():
    atoms = nacl()
    atoms.calc = PME(charges={"Na": 1.0, "Cl": -0.75})
    with pytest.warns(NonNeutralWarning, match=r"net charge Q = 1 e.*neutralising background"):
        atoms.get_potential_energy()
    atoms.calc = PME(charges=NACL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonNeutralWarning)
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accuracy": 0.0}, "'accuracy' must be a number in \\(0, 1\\)"),
        ({"accuracy": "1e-5"}, "'accuracy' must be a number"),
        ({"order": 3}, "'order' must be None .* or an integer B-spline order in 4..8; got 3"),
        ({"order": 6.0}, "'order' must be None"),
        ({"alpha": -0.3}, "'alpha' must be None .* or a positive finite number; got -0.3"),
        ({"cutoff": math.inf}, "'cutoff' must be None"),
        ({"mesh": (16, 16)}, "'mesh' must be None or three integers"),
        ({"mesh": (16, 16, 3)}, "'mesh' must be .*each ≥ the spline order 6"),
        ({"workers": 0}, "'workers' must be None"),
        ({"charges": {"Na": "one"}}, "'charges' as a dict must map chemical symbols"),
        ({"charges": [[1.0]]}, "'charges' must be None, a dict"),
    ],
)
def test_bad_parameters_are_rejected_at_construction(kwargs, message):
    with pytest.raises(InvalidParameterError, match=f"PME: {message}"):
        PME(**kwargs)


def test_ewald_rejects_bad_kcutoff():
    with pytest.raises(InvalidParameterError, match="Ewald: 'kcutoff' must be None"):
        Ewald(kcutoff=0)


def test_empty_atoms():
    atoms = Atoms(cell=np.eye(3) * 5.0, pbc=True)
    atoms.calc = PME()
    assert atoms.get_potential_energy() == 0.0
    assert atoms.get_forces().shape == (0, 3)


def test_docstring_examples_run():
    import doctest

    from gapkit.electrostatics import calculators

    result = doctest.testmod(calculators, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


# ---------------------------------------------------------------- zero, tiny and missing charges


@pytest.mark.parametrize("value", [0.0, 1e-300])
@pytest.mark.parametrize("method", [Ewald, PME])
def test_zero_charges_give_zero_energy_without_tuning(method, value):
    """All-zero charges (or so small that Σq² underflows): zeros, no tuning, no error."""
    atoms = nacl()
    atoms.calc = method(charges={"Na": value, "Cl": -value})
    assert atoms.get_potential_energy() == 0.0
    np.testing.assert_array_equal(atoms.get_potential_energies(), np.zeros(len(atoms)))
    np.testing.assert_array_equal(atoms.get_forces(), np.zeros((len(atoms), 3)))
    np.testing.assert_array_equal(atoms.get_stress(), np.zeros(6))
    assert atoms.calc.tuned_ is None


def test_zero_charges_coulomb_and_explicit_zero_initial_charges():
    pair = Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.0]])
    pair.calc = Coulomb(charges={"Na": 0, "Cl": 0})
    assert pair.get_potential_energy() == 0.0
    atoms = nacl()
    atoms.set_initial_charges(np.zeros(len(atoms)))  # charges given, and all zero
    atoms.calc = PME()
    assert atoms.get_potential_energy() == 0.0


@pytest.mark.parametrize("scale", [1e-8, 1e-3])
@pytest.mark.parametrize("method", [Ewald, PME])
def test_tiny_charges_work(method, scale):
    """The accuracy is absolute (relative to unit charges): tiny charges meet it easily."""
    accuracy = 1e-6
    atoms = nacl()
    atoms.calc = method(charges={"Na": scale, "Cl": -scale}, accuracy=accuracy)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    unit = nacl()
    unit.calc = Ewald(charges=NACL, accuracy=1e-10)
    tol = 2 * accuracy * COULOMB_CONSTANT
    assert abs(energy - scale**2 * unit.get_potential_energy()) / len(atoms) < tol
    assert np.sqrt(np.mean(np.sum((forces - scale**2 * unit.get_forces()) ** 2, axis=1))) < tol
    assert np.all(np.isfinite(atoms.get_stress()))


@pytest.mark.parametrize("method", [Ewald, PME])
def test_no_charges_anywhere_is_a_clear_error(method):
    atoms = nacl()
    assert not atoms.has("initial_charges")
    atoms.calc = method()
    with pytest.raises(
        InvalidParameterError,
        match=rf"{method.__name__}: the structure has no charges.*"
        r"charges=\{'Cl': q_Cl, 'Na': q_Na\}.*set_initial_charges",
    ):
        atoms.get_potential_energy()


def test_no_charges_coulomb():
    mol = molecule("H2O")
    mol.calc = Coulomb()
    with pytest.raises(InvalidParameterError, match="Coulomb: the structure has no charges"):
        mol.get_potential_energy()


@pytest.mark.parametrize("method", [Ewald, PME])
def test_baseline_without_charges_fails_clearly_in_fit(method):
    from gapkit import SOAP, GAPRegressor
    from gapkit.datasets import load_cu_emt

    frames = [a for a in load_cu_emt()[0] if all(a.pbc)][:2]
    model = GAPRegressor(SOAP(r_cut=3.0, n_max=2, l_max=1), baseline=method(), n_sparse=4)
    with pytest.raises(
        InvalidParameterError, match=r"the structure has no charges.*charges=\{'Cu': q_Cu\}"
    ):
        model.fit(frames)


# ---------------------------------------------------------------- unknown keys, round trips


@pytest.mark.parametrize("method", [Ewald, PME, Coulomb])
def test_unknown_parameters_are_rejected(method):
    with pytest.raises(
        InvalidParameterError,
        match=rf"{method.__name__}: unknown parameter 'chrages' \(did you mean "
        r"'charges'\?\); allowed: 'charges', .*'device'",
    ):
        method(chrages=NACL)
    method(charges=NACL, label="calc")  # ASE's own keyword arguments still pass


def test_unknown_parameter_set_later_is_rejected_at_calculate():
    atoms = nacl()
    atoms.calc = PME(charges=NACL)
    atoms.calc.set(acuracy=1e-7)
    with pytest.raises(InvalidParameterError, match="PME: unknown parameter 'acuracy'"):
        atoms.get_potential_energy()


def test_calculator_from_dict_rejects_unknown_keys():
    with pytest.raises(
        InvalidParameterError,
        match=r"calculator_from_dict \(Ewald\): unknown key 'acuracy' \(did you "
        r"mean 'accuracy'\?\); allowed: 'class', 'charges', 'accuracy', "
        r"'alpha', 'cutoff', 'kcutoff', 'device'\.",
    ):
        calculator_from_dict({"class": "Ewald", "acuracy": 1e-6})
    with pytest.raises(InvalidParameterError, match=r"unknown keys 'mesh', 'zzz'; allowed"):
        calculator_from_dict({"class": "Coulomb", "mesh": [8, 8, 8], "zzz": 1})
    with pytest.raises(InvalidParameterError, match="'class' must be one of"):
        calculator_from_dict({"class": ["Ewald"]})
    with pytest.raises(InvalidParameterError, match="PME: 'accuracy' must be a number"):
        calculator_from_dict({"class": "PME", "accuracy": -1})


@pytest.mark.parametrize(
    "calc",
    [
        Ewald(),
        PME(),
        Coulomb(),
        Ewald(
            charges=np.array([1.0, -1.0] * 4),
            accuracy=np.float64(1e-7),
            alpha=0.4,
            cutoff=np.float64(9.0),
            kcutoff=0.9,
            device="auto",
        ),
        PME(
            charges={"Na": np.float64(1.0), "Cl": -1},
            accuracy=1e-6,
            order=np.int64(7),
            alpha=0.35,
            cutoff=9.0,
            mesh=np.array([20, 21, 22]),
            workers=2,
            device="cpu",
        ),
        Coulomb(charges=[0.5, -0.5], device="auto"),
    ],
)
def test_every_calculator_round_trips_through_json(calc):
    d = calc.todict()
    text = json.dumps(d)
    again = calculator_from_dict(json.loads(text))
    assert type(again) is type(calc)
    assert json.dumps(again.todict()) == text
    assert set(again.parameters) == set(calc.parameters)


# ---------------------------------------------------------------- absurd parameters


@pytest.mark.parametrize("method", [Ewald, PME])
@pytest.mark.parametrize("bad", [float("nan"), math.inf, 0.0, -1e-5, 1.0, 1e-300])
def test_bad_accuracy_is_rejected(method, bad):
    with pytest.raises(InvalidParameterError, match=rf"{method.__name__}: 'accuracy' must be"):
        method(charges=NACL, accuracy=bad)


@pytest.mark.parametrize("method", [Ewald, PME])
def test_nan_cell(method):
    atoms = nacl()
    cell = atoms.cell.array.copy()
    cell[0, 0] = np.nan
    atoms.set_cell(cell, scale_atoms=False)
    atoms.calc = method(charges=NACL)
    with pytest.raises(InvalidStructureError, match="atoms.cell contains NaN or infinite"):
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        (Ewald, {"cutoff": 1e5}, "real-space cut-off 1e\\+05 Å reaches .* periodic images"),
        (PME, {"cutoff": 1e5}, "real-space cut-off 1e\\+05 Å reaches .* periodic images"),
        (Ewald, {"alpha": 1e3}, "wave-vector cut-off .* integer wave vectors"),
        (Ewald, {"kcutoff": 1e3}, "wave-vector cut-off 1000 Å⁻¹ spans"),
        (PME, {"alpha": 1e3}, "alpha=1000 Å⁻¹ needs a mesh of .* points, more than"),
        (PME, {"cutoff": 1e-3}, "needs a mesh of .* set 'mesh' yourself"),
    ],
)
def test_absurd_cutoffs_are_clear_errors(method, kwargs, message):
    atoms = nacl()
    atoms.calc = method(charges=NACL, **kwargs)
    with pytest.raises(InvalidParameterError, match=f"{method.__name__}: .*{message}"):
        atoms.get_potential_energy()
