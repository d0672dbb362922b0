"""PME against the direct Ewald sum, finite differences and invariances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, cut
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from gapkit.electrostatics import PME, Ewald
from gapkit.exceptions import NonNeutralWarning
from gapkit.units import COULOMB_CONSTANT


def random_system(seed, n_atoms=24, neutral=True, length=9.0):
    """Random charges in a random triclinic cell (no two atoms closer than 0.9 Å)."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * length + rng.uniform(-0.35, 0.35, size=(3, 3)) * length
    positions = []
    while len(positions) < n_atoms:
        trial = rng.random(3) @ cell
        atoms_ = Atoms(positions=[*positions, trial], cell=cell, pbc=True)
        if (
            len(positions) == 0
            or np.min(atoms_.get_distances(len(positions), range(len(positions)), mic=True)) > 0.9
        ):
            positions.append(trial)
    charges = rng.normal(size=n_atoms)
    if neutral:
        charges -= charges.mean()
    return Atoms("X" * n_atoms, positions=positions, cell=cell, pbc=True, charges=charges)


def rms_force_error(f, f_ref):
    return float(np.sqrt(np.mean(np.sum((f - f_ref) ** 2, axis=1))))


@pytest.fixture(autouse=True)
def _quiet_non_neutral():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonNeutralWarning)
        yield


@pytest.mark.parametrize("order", [4, 5, 6, 7, 8])
@pytest.mark.parametrize("neutral", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_pme_matches_ewald(seed, neutral, order):
    accuracy = 1e-5
    atoms = random_system(seed, neutral=neutral)
    atoms.calc = Ewald(accuracy=1e-10)
    ref = {k: atoms.calc.get_property(k, atoms) for k in ("energy", "forces", "stress", "energies")}
    atoms.calc = PME(accuracy=accuracy, order=order)
    tol_f = accuracy * COULOMB_CONSTANT
    assert rms_force_error(atoms.get_forces(), ref["forces"]) < tol_f
    # energy and virial per atom: errors of the same order (in eV = eV/Å × 1 Å)
    n = len(atoms)
    assert abs(atoms.get_potential_energy() - ref["energy"]) / n < tol_f
    assert np.abs(atoms.get_stress() - ref["stress"]).max() * atoms.get_volume() / n < 5 * tol_f
    assert np.abs(atoms.get_potential_energies() - ref["energies"]).max() < 5 * tol_f
    assert atoms.get_potential_energies().sum() == pytest.approx(
        atoms.get_potential_energy(), rel=1e-12
    )


@pytest.mark.parametrize("order", [4, 6, 8])
def test_pme_tight_parameters_reach_ewald(order):
    """With a fine mesh PME converges to the Ewald sum at the same α and cut-off."""
    atoms = random_system(3, neutral=False)
    atoms.calc = Ewald(alpha=0.45, cutoff=9.0, kcutoff=2.0)
    e_ref, f_ref, s_ref = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = PME(alpha=0.45, cutoff=9.0, mesh=(48, 48, 48), order=order)
    tol = {4: 2e-5, 6: 1e-7, 8: 1e-9}[order] * COULOMB_CONSTANT
    assert atoms.get_potential_energy() == pytest.approx(e_ref, abs=tol * len(atoms))
    assert np.abs(atoms.get_forces() - f_ref).max() < 10 * tol
    assert np.abs(atoms.get_stress() - s_ref).max() < tol


@pytest.mark.parametrize("method", ["ewald", "pme"])
@pytest.mark.parametrize("neutral", [True, False])
def test_forces_are_minus_energy_gradient(method, neutral):
    atoms = random_system(4, n_atoms=12, neutral=neutral)
    if method == "ewald":
        atoms.calc = Ewald(alpha=0.5, cutoff=8.0, kcutoff=1.6)
    else:
        atoms.calc = PME(alpha=0.5, cutoff=8.0, mesh=(20, 21, 22), order=5)
    numerical = calculate_numerical_forces(atoms, 1e-4, iatoms=[0, 5, 11])
    analytic = atoms.get_forces()[[0, 5, 11]]
    np.testing.assert_allclose(analytic, numerical, atol=1e-6)


@pytest.mark.parametrize("method", ["ewald", "pme"])
@pytest.mark.parametrize("neutral", [True, False])
def test_stress_is_strain_derivative(method, neutral):
    atoms = random_system(5, n_atoms=12, neutral=neutral)
    if method == "ewald":
        atoms.calc = Ewald(alpha=0.5, cutoff=8.0, kcutoff=3.0)
    else:
        atoms.calc = PME(alpha=0.5, cutoff=8.0, mesh=(20, 21, 22), order=6)
    numerical = calculate_numerical_stress(atoms, 1e-5)
    np.testing.assert_allclose(atoms.get_stress(), numerical, atol=1e-6)


@pytest.mark.parametrize("method", [Ewald, PME])
def test_translation_and_wrapping_invariance(method):
    atoms = random_system(6)
    atoms.calc = method(accuracy=1e-7)
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    moved = atoms.copy()
    moved.positions += [3.3, -7.1, 12.9]
    moved.positions[3] += atoms.cell[1] * 2  # an explicit image
    moved.calc = method(accuracy=1e-7)
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-6)
    np.testing.assert_allclose(moved.get_forces(), f0, atol=1e-5)
    np.testing.assert_allclose(moved.get_stress(), s0, atol=1e-6)


@pytest.mark.parametrize("method", [Ewald, PME])
def test_invariance_under_choice_of_lattice_vectors(method):
    """The same crystal from a unimodular transform of the cell, and from ase.build.cut.

    The tuned parameters depend on the cell vectors, so results agree to within
    the requested accuracy rather than to round-off.
    """
    accuracy = 1e-7
    tol = 2 * accuracy * COULOMB_CONSTANT
    prim = bulk("NaCl", "rocksalt", a=5.64)
    base = prim.repeat(2)
    base.rattle(0.1, seed=11)
    charges = {"Na": 1.0, "Cl": -1.0}
    base.calc = method(charges=charges, accuracy=accuracy)
    n = len(base)

    sheared = base.copy()
    transform = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])  # integer, det = 1
    sheared.set_cell(transform @ base.cell.array, scale_atoms=False)
    sheared.wrap()
    sheared.calc = method(charges=charges, accuracy=accuracy)
    assert abs(sheared.get_potential_energy() - base.get_potential_energy()) / n < tol
    assert rms_force_error(sheared.get_forces(), base.get_forces()) < tol
    assert np.abs(sheared.get_stress() - base.get_stress()).max() * base.get_volume() / n < 5 * tol

    cubic = cut(prim, a=(1, 1, -1), b=(-1, 1, 1), c=(1, -1, 1))  # conventional cell
    cubic.calc = method(charges=charges, accuracy=accuracy)
    conv = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    conv.calc = method(charges=charges, accuracy=accuracy)
    assert len(cubic) == len(conv)
    assert abs(cubic.get_potential_energy() - conv.get_potential_energy()) / len(conv) < tol
    assert np.abs(cubic.get_stress() - conv.get_stress()).max() * conv.get_volume() / 8 < 5 * tol


def test_small_cell_smaller_than_cutoff():
    """A 2-atom cell much smaller than the cut-off: images are enumerated."""
    atoms = bulk("NaCl", "rocksalt", a=4.0)
    atoms.positions[1] += [0.2, -0.1, 0.05]
    atoms.calc = Ewald(charges={"Na": 1.0, "Cl": -1.0}, alpha=0.3, cutoff=15.0, kcutoff=1.0)
    big = atoms.repeat((3, 2, 2))
    big.calc = Ewald(charges={"Na": 1.0, "Cl": -1.0}, alpha=0.3, cutoff=15.0, kcutoff=1.0)
    assert big.get_potential_energy() == pytest.approx(12 * atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(big.get_forces()[:2], atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(big.get_stress(), atoms.get_stress(), atol=1e-10)


def _energy_and_forces_in_child(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.mark.parametrize("method", [PME, Ewald])
def test_forked_child_computes_electrostatics(method):
    """A process forked after the parent ran the compiled (OpenMP) loops must not
    abort (GNU OpenMP does after fork): it runs serial copies of the kernels."""
    import multiprocessing

    atoms = random_system(3)
    reference = atoms.copy()
    reference.calc = method()
    energy, forces = reference.get_potential_energy(), reference.get_forces()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_energy_and_forces_in_child, (method(), atoms)).get(timeout=120)
    assert got[0] == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(got[1], forces, rtol=0, atol=1e-9 * np.abs(forces).max())
