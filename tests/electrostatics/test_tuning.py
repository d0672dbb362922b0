"""Parameter choice from ``accuracy``: the measured RMS force error meets the target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from gapkit.electrostatics import PME, Ewald, PMEParameters, tune_ewald, tune_pme
from gapkit.electrostatics.tuning import (
    ewald_kspace_error,
    pme_kspace_error,
    real_space_error,
)
from gapkit.exceptions import InvalidParameterError, InvalidStructureError
from gapkit.units import COULOMB_CONSTANT


def rattled_nacl(repeat=3, seed=0):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.15, seed=seed)
    atoms.set_initial_charges(np.where(atoms.numbers == 11, 1.0, -1.0))
    return atoms


def random_ions(n=300, seed=1):
    """A disordered, neutral set of ±1/±2 charges in a triclinic box."""
    rng = np.random.default_rng(seed)
    cell = np.array([[15.0, 0.0, 0.0], [3.0, 14.0, 0.0], [-2.0, 2.5, 16.0]])
    frac = rng.random((n, 3))
    charges = rng.choice([-2.0, -1.0, 1.0, 2.0], size=n)
    charges -= charges.mean()
    return Atoms("X" * n, scaled_positions=frac, cell=cell, pbc=True, charges=charges)


def rms(f, g):
    return float(np.sqrt(np.mean(np.sum((f - g) ** 2, axis=1))))


@pytest.fixture(scope="module", params=["nacl", "random"])
def system_and_reference(request):
    atoms = rattled_nacl() if request.param == "nacl" else random_ions()
    atoms.calc = Ewald(accuracy=1e-10)
    return atoms, atoms.get_forces().copy()


@pytest.mark.parametrize("accuracy", [1e-4, 1e-5, 1e-6])
@pytest.mark.parametrize("order", [4, 6, 8])
def test_pme_measured_force_error_meets_accuracy(system_and_reference, accuracy, order):
    atoms, f_ref = system_and_reference
    atoms = atoms.copy()
    atoms.calc = PME(accuracy=accuracy, order=order)
    error = rms(atoms.get_forces(), f_ref)
    assert error < accuracy * COULOMB_CONSTANT
    # and the estimate is not wildly pessimistic either (the mesh is not wasted)
    assert error > 0.05 * accuracy * COULOMB_CONSTANT


@pytest.mark.parametrize("accuracy", [1e-4, 1e-6])
def test_ewald_measured_force_error_meets_accuracy(system_and_reference, accuracy):
    atoms, f_ref = system_and_reference
    atoms = atoms.copy()
    atoms.calc = Ewald(accuracy=accuracy)
    assert rms(atoms.get_forces(), f_ref) < accuracy * COULOMB_CONSTANT


def test_error_estimates_decrease_with_effort():
    args = dict(sum_q2=100.0, n_atoms=100, volume=2000.0)
    assert real_space_error(10.0, 0.3, **args) < real_space_error(8.0, 0.3, **args)
    assert ewald_kspace_error(1.0, 0.3, **args) < ewald_kspace_error(0.5, 0.3, **args)
    cell = np.eye(3) * 12.6
    coarse = pme_kspace_error((16, 16, 16), cell, 0.3, 6, 100.0, 100)
    fine = pme_kspace_error((32, 32, 32), cell, 0.3, 6, 100.0, 100)
    assert fine < coarse * 2.0**-5  # roughly (h α)^p


def test_tune_pme_meets_its_own_estimate_and_respects_fixed_values():
    atoms = rattled_nacl(2)
    q = atoms.get_initial_charges()
    cell = atoms.cell.array
    auto = tune_pme(cell, q, 1e-5)
    assert auto.order in (4, 5, 6, 7, 8) and auto.estimated_error <= 1e-5
    params = tune_pme(cell, q, 1e-5, order=5)
    assert isinstance(params, PMEParameters)
    assert params.estimated_error <= 1e-5
    assert all(k >= 5 for k in params.mesh)
    fixed = tune_pme(cell, q, 1e-5, cutoff=7.0)
    assert fixed.cutoff == 7.0
    n, v = len(q), atoms.get_volume()
    assert real_space_error(7.0, fixed.alpha, float(q @ q), n, v) == pytest.approx(
        0.8e-5 / math.sqrt(2.0), rel=1e-6
    )
    by_alpha = tune_pme(cell, q, 1e-5, alpha=0.4)
    assert by_alpha.alpha == 0.4 and by_alpha.cutoff > 0
    by_mesh = tune_pme(cell, q, 1e-5, mesh=(20, 20, 20))
    assert by_mesh.mesh == (20, 20, 20) and by_mesh.estimated_error <= 1e-5
    assert params.todict()["order"] == 5


def test_tune_ewald_fixed_values():
    atoms = rattled_nacl(2)
    q = atoms.get_initial_charges()
    p = tune_ewald(atoms.cell.array, q, 1e-6, alpha=0.35)
    assert p.alpha == 0.35 and p.estimated_error <= 1e-6
    p2 = tune_ewald(atoms.cell.array, q, 1e-6, kcutoff=0.5)
    assert p2.kcutoff == 0.5 and p2.estimated_error <= 1e-6


def test_hand_set_parameters_are_used():
    atoms = rattled_nacl(2)
    atoms.calc = PME(alpha=0.31, cutoff=9.5, mesh=(24, 25, 27), order=7)
    atoms.get_forces()
    tuned = atoms.calc.tuned_
    assert (tuned.alpha, tuned.cutoff, tuned.mesh, tuned.order) == (0.31, 9.5, (24, 25, 27), 7)


@pytest.mark.parametrize("bad", [0, 1.5, -1e-5, float("nan"), "high"])
def test_tuner_rejects_bad_accuracy(bad):
    with pytest.raises(InvalidParameterError, match="'accuracy' must be a number in"):
        tune_pme(np.eye(3) * 10, np.ones(2), bad)


def test_tuner_rejects_bad_order():
    with pytest.raises(InvalidParameterError, match="'order' must be None or an integer in 4..8"):
        tune_pme(np.eye(3) * 10, np.ones(2), 1e-5, order=3)


@pytest.mark.slow
@pytest.mark.parametrize("accuracy", [1e-4, 1e-5, 1e-6, 1e-7])
def test_pme_error_on_larger_disordered_system(accuracy):
    """2000 random ±1/±2 charges, automatic order: measured error below the target."""
    atoms = random_ions(n=2000, seed=9)
    atoms.set_cell(atoms.cell.array * (2000 / 300) ** (1 / 3), scale_atoms=True)
    atoms.calc = PME(accuracy=1e-9, order=8)
    f_ref = atoms.get_forces().copy()
    atoms.calc = PME(accuracy=accuracy)
    error = rms(atoms.get_forces(), f_ref)
    assert 0.05 * accuracy * COULOMB_CONSTANT < error < accuracy * COULOMB_CONSTANT


def test_tuners_accept_numpy_scalars():
    p = tune_pme(np.eye(3) * 10, np.array([1.0, -1.0]), np.float32(1e-5))
    assert p.estimated_error <= 1e-5


@pytest.mark.parametrize("tune", [tune_pme, tune_ewald])
def test_tuners_validate_cell_and_charges(tune):
    name = tune.__name__
    with pytest.raises(
        InvalidStructureError, match=f"{name}: 'cell' must be a \\(3, 3\\) array.*NaN or infinite"
    ):
        tune(np.full((3, 3), np.nan), np.ones(2))
    with pytest.raises(InvalidStructureError, match=f"{name}: 'cell' must be a \\(3, 3\\)"):
        tune(np.eye(2), np.ones(2))
    with pytest.raises(InvalidStructureError, match=f"{name}: the cell has zero volume"):
        tune(np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 0]]), np.ones(2))
    with pytest.raises(InvalidParameterError, match=f"{name}: 'charges' must be a 1-D array"):
        tune(np.eye(3) * 10, np.array([1.0, np.nan]))
    with pytest.raises(InvalidParameterError, match=f"{name}: the charges are all zero"):
        tune(np.eye(3) * 10, np.zeros(2))
    with pytest.raises(InvalidParameterError, match=f"{name}: 'alpha' must be None"):
        tune(np.eye(3) * 10, np.ones(2), alpha=float("nan"))
    with pytest.raises(InvalidParameterError, match=f"{name}: 'accuracy' must be .*at least 1e-15"):
        tune(np.eye(3) * 10, np.ones(2), 1e-300)


def test_tune_pme_rejects_bad_mesh():
    with pytest.raises(InvalidParameterError, match="tune_pme: 'mesh' must be None or three"):
        tune_pme(np.eye(3) * 10, np.array([1.0, -1.0]), mesh=(8, 8))


def test_tiny_charges_give_sane_parameters():
    """When the bare prefactor already meets the target, α r_c stays ≥ 1 (no 1e-6 Å cut-off)."""
    cell = np.eye(3) * 5.64
    q = np.array([1e-8, -1e-8] * 4)
    ewald = tune_ewald(cell, q, 1e-5)
    assert ewald.alpha * ewald.cutoff >= 1.0 - 1e-12
    pme = tune_pme(cell, q, 1e-5)
    assert pme.cutoff >= 4.0 and max(pme.mesh) <= 16
