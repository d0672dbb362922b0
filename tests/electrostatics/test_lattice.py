"""Skewed bases of a lattice: the cell is Minkowski-reduced before tuning and summing.

The same crystal written with a skewed basis (long, nearly parallel vectors) must
give the energy, forces and stress of the reduced description, with the mesh of
the reduced cell, and the literature Madelung constant.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from gapkit.electrostatics import PME, Ewald, reduce_cell, tune_ewald, tune_pme
from gapkit.electrostatics._lattice import is_reduced
from gapkit.electrostatics.ewald import reciprocal_vectors
from gapkit.electrostatics.realspace import real_space_sum
from gapkit.units import COULOMB_CONSTANT

NACL = {"Na": 1.0, "Cl": -1.0}
MADELUNG_NACL = 1.7475645946332


def skew(cell, factor=1):
    """(a1, a2 + 7 a1, a3 + 5 a1 - 9 a2), times ``factor``: the same lattice."""
    a1, a2, a3 = np.asarray(cell, dtype=float)
    return np.array([a1, a2 + 7 * factor * a1, a3 + 5 * factor * a1 - 9 * factor * a2])


def skewed_copy(atoms, factor=1):
    out = atoms.copy()
    out.set_cell(skew(atoms.cell.array, factor), scale_atoms=False)  # positions as given
    return out


def rattled_nacl(repeat=1, seed=3):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.1, seed=seed)
    return atoms


# ---------------------------------------------------------------- reduce_cell


def test_reduce_cell_keeps_reduced_cells_as_given():
    hexagonal = bulk("Mg", "hcp", a=3.2, c=5.2).cell.array
    for cell in (
        np.diag([10.0, 5.0, 7.0]),
        bulk("Cu", "fcc", a=3.6).cell.array,
        hexagonal,
        np.array([[15.0, 0.0, 0.0], [3.0, 14.0, 0.0], [-2.0, 2.5, 16.0]]),
    ):
        assert is_reduced(cell)
        reduced, op = reduce_cell(cell)
        assert reduced is cell or np.array_equal(reduced, cell)  # order and signs kept
        assert np.array_equal(op, np.eye(3, dtype=int))


@pytest.mark.parametrize("factor", [1, 10, 1000])
def test_reduce_cell_of_a_skewed_basis(factor):
    cubic = 5.64 * np.eye(3)
    skewed = skew(cubic, factor)
    assert not is_reduced(skewed)
    reduced, op = reduce_cell(skewed)
    assert is_reduced(reduced)
    assert round(abs(np.linalg.det(op))) == 1
    np.testing.assert_allclose(op @ skewed, reduced, atol=1e-9 * factor)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 5.64, rtol=1e-12)
    assert np.sign(np.linalg.det(reduced)) == np.sign(np.linalg.det(skewed))


# ---------------------------------------------------------------- calculators


@pytest.mark.parametrize("factor", [1, 3])
@pytest.mark.parametrize("method", [Ewald, PME])
def test_skewed_basis_gives_the_results_of_the_reduced_cell(method, factor):
    """Energy, per-atom energies, forces (atom order as given) and stress, to 1e-6 relative."""
    base = rattled_nacl()
    skewed = skewed_copy(base, factor)
    base.calc = method(charges=NACL, accuracy=1e-6)
    skewed.calc = method(charges=NACL, accuracy=1e-6)
    e0 = base.get_potential_energy()
    assert skewed.get_potential_energy() == pytest.approx(e0, rel=1e-6)
    np.testing.assert_allclose(
        skewed.get_potential_energies(), base.get_potential_energies(), rtol=1e-6
    )
    scale = np.abs(base.get_forces()).max()
    np.testing.assert_allclose(skewed.get_forces(), base.get_forces(), atol=1e-6 * scale)
    np.testing.assert_allclose(
        skewed.get_stress(), base.get_stress(), atol=1e-6 * np.abs(base.get_stress()).max()
    )
    np.testing.assert_allclose(skewed.calc.cell_, base.cell.array, atol=1e-9)
    np.testing.assert_array_equal(skewed.positions, base.positions)  # atoms untouched


@pytest.mark.parametrize("method", [Ewald, PME])
def test_skewed_basis_meets_the_requested_accuracy(method):
    """Measured RMS force error on a skewed basis is that of the reduced cell (≤ 2δ k_e)."""
    accuracy = 1e-6
    base = rattled_nacl(seed=5)
    reference = base.copy()
    reference.calc = Ewald(charges=NACL, accuracy=1e-12)
    f_ref = reference.get_forces()
    skewed = skewed_copy(base, 3)
    skewed.calc = method(charges=NACL, accuracy=accuracy)
    error = np.sqrt(np.mean(np.sum((skewed.get_forces() - f_ref) ** 2, axis=1)))
    assert error < 2 * accuracy * COULOMB_CONSTANT


def test_skewed_triclinic_cell_agrees_to_the_accuracy():
    """A triclinic lattice (reduced basis ≠ the original one up to order) agrees within δ."""
    accuracy = 1e-7
    prim = bulk("NaCl", "rocksalt", a=5.64).repeat(2)
    prim.rattle(0.1, seed=11)
    skewed = skewed_copy(prim)
    assert is_reduced(prim.cell.array) and not is_reduced(skewed.cell.array)
    n = len(prim)
    for method in (Ewald, PME):
        prim.calc = method(charges=NACL, accuracy=accuracy)
        skewed.calc = method(charges=NACL, accuracy=accuracy)
        tol = 2 * accuracy * COULOMB_CONSTANT
        assert abs(skewed.get_potential_energy() - prim.get_potential_energy()) / n < tol
        rms = np.sqrt(np.mean(np.sum((skewed.get_forces() - prim.get_forces()) ** 2, axis=1)))
        assert rms < tol
        stress_error = np.abs(skewed.get_stress() - prim.get_stress()).max()
        assert stress_error * prim.get_volume() < 5 * n * tol


@pytest.mark.parametrize("primitive", [False, True])
@pytest.mark.parametrize("method", [Ewald, PME])
def test_madelung_constant_on_a_skewed_basis(method, primitive):
    """NaCl with nearest-neighbour distance d = 1 Å: E per ion pair = -k_e M / d."""
    atoms = bulk("NaCl", "rocksalt", a=2.0, cubic=not primitive)
    skewed = skewed_copy(atoms)
    skewed.calc = method(charges=NACL, accuracy=1e-9)
    reference = -COULOMB_CONSTANT * MADELUNG_NACL * len(atoms) / 2
    assert skewed.get_potential_energy() == pytest.approx(reference, rel=1e-7)
    np.testing.assert_allclose(skewed.get_forces(), 0.0, atol=1e-7)
    if method is PME:  # the mesh of the cube (or fcc cell), not one along the long vectors
        assert max(skewed.calc.tuned_.mesh) <= 16


def _same_parameters(p, q):
    a, b = p.todict(), q.todict()
    for key in a:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-10), key
        else:
            assert a[key] == b[key], key


def test_tuned_mesh_of_a_skewed_cell_is_that_of_the_reduced_cell():
    base = rattled_nacl()
    q = np.where(base.numbers == 11, 1.0, -1.0)
    base.calc = PME(charges=NACL, accuracy=1e-6)
    base.get_potential_energy()
    for factor in (1, 10, 100):
        cell = skew(base.cell.array, factor)
        _same_parameters(tune_pme(cell, q, 1e-6), tune_pme(base.cell.array, q, 1e-6))
        _same_parameters(tune_ewald(cell, q, 1e-6), tune_ewald(base.cell.array, q, 1e-6))
        skewed = skewed_copy(base, factor)
        skewed.calc = PME(charges=NACL, accuracy=1e-6)
        skewed.get_potential_energy()
        _same_parameters(skewed.calc.tuned_, base.calc.tuned_)
        assert max(skewed.calc.tuned_.mesh) <= 16  # that of a 5.64 Å cube


def test_real_space_sum_and_wave_vectors_cope_with_a_skewed_basis():
    """The low-level sums accept any basis: same pairs, same wave vectors."""
    base = rattled_nacl()
    q = np.where(base.numbers == 11, 1.0, -1.0)
    cell = skew(base.cell.array, 30)  # unreduced, its stencil would need ~10⁹ bins
    e0, f0, v0 = real_space_sum(base.positions, base.cell.array, q, 0.4, 9.0)
    e1, f1, v1 = real_space_sum(base.positions, cell, q, 0.4, 9.0)
    np.testing.assert_allclose(e1, e0, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(f1, f0, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(v1, v0, rtol=1e-9, atol=1e-10)
    m0 = reciprocal_vectors(base.cell.array, 0.8)
    m1 = reciprocal_vectors(cell, 0.8)
    assert len(m0) == len(m1)

    def both_signs(m):
        return sorted(map(tuple, np.round(np.concatenate([m, -m]) * 1e6).astype(int)))

    assert both_signs(m0) == both_signs(m1)


def test_docstring_examples_run():
    import doctest

    from gapkit.electrostatics import _lattice

    result = doctest.testmod(_lattice, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0
