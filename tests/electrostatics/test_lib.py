"""The numerical parts on their own: B-splines, potentials, real-space sum, Ewald k-space."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import erfc

from gapkit.electrostatics.ewald import ewald_reciprocal, reciprocal_vectors
from gapkit.electrostatics.potentials import (
    background_energy,
    real_space_kernel,
    reciprocal_kernel,
    self_energy,
)
from gapkit.electrostatics.realspace import _erfc_table, _erfcx_lookup, pair_sum, real_space_sum
from gapkit.electrostatics.splines import bspline_moduli, bspline_weights


def cardinal_bspline(x, p):
    """Reference M_p(x) from the explicit formula Σ_k (-1)^k C(p,k) (x-k)_+^{p-1}/(p-1)!."""
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    for k in range(p + 1):
        out += (-1) ** k * math.comb(p, k) * np.clip(x - k, 0, None) ** (p - 1)
    return out / math.factorial(p - 1)


@pytest.mark.parametrize("order", [2, 3, 4, 5, 6, 7, 8])
def test_bspline_weights_values_sum_and_derivative(order):
    w = np.linspace(0.0, 0.999, 37)
    weights, derivs = bspline_weights(w, order)
    expected = np.stack([cardinal_bspline(w + j, order) for j in range(order)], axis=1)
    np.testing.assert_allclose(weights, expected, atol=1e-12)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-13)
    np.testing.assert_allclose(derivs.sum(axis=1), 0.0, atol=1e-12)
    h = 1e-6
    wp, _ = bspline_weights(w + h, order)
    wm, _ = bspline_weights(np.clip(w - h, 0, None), order)
    step = (w + h) - np.clip(w - h, 0, None)
    np.testing.assert_allclose(derivs, (wp - wm) / step[:, None], atol=5e-6)


@pytest.mark.parametrize(("k", "order"), [(16, 4), (15, 5), (16, 5), (20, 6), (12, 7), (9, 8)])
def test_bspline_moduli(k, order):
    moduli = bspline_moduli(k, order)
    assert moduli.shape == (k,)
    assert np.all(np.isfinite(moduli)) and np.all(moduli > 0)
    assert moduli[0] == pytest.approx(1.0)  # the weights sum to one
    np.testing.assert_allclose(moduli[1:], moduli[1:][::-1], rtol=1e-12)  # |b(m)| = |b(-m)|


def test_bspline_moduli_odd_order_even_mesh_uses_neighbours():
    moduli = bspline_moduli(16, 5)
    assert moduli[8] == pytest.approx(0.5 * (moduli[7] + moduli[9]))


def test_potential_terms():
    r = np.array([0.5, 1.0, 3.0])
    phi, dphi = real_space_kernel(r, 0.7)
    np.testing.assert_allclose(phi, erfc(0.7 * r) / r)
    h = 1e-6
    np.testing.assert_allclose(
        dphi,
        (real_space_kernel(r + h, 0.7)[0] - real_space_kernel(r - h, 0.7)[0]) / (2 * h),
        rtol=1e-7,
    )
    assert reciprocal_kernel(np.array([0.25]), 1.0, 10.0)[0] == pytest.approx(
        math.exp(-(math.pi**2) * 0.25) / (math.pi * 10.0 * 0.25)
    )
    np.testing.assert_allclose(
        self_energy([1.0, -2.0], 0.5), [-0.5 / math.sqrt(math.pi), -2.0 / math.sqrt(math.pi)]
    )
    assert background_energy([1.0, 1.0], 100.0, 0.5).sum() == pytest.approx(
        -math.pi * 4.0 / (2 * 100.0 * 0.25)
    )


def test_erfc_table_accuracy():
    table = _erfc_table(6.0)
    x = np.linspace(0.0, 6.0, 1001)
    values = np.array([math.exp(-v * v) * _erfcx_lookup(v, table) for v in x])
    np.testing.assert_allclose(values, erfc(x), rtol=1e-12, atol=1e-300)


def brute_force_real_space(positions, cell, charges, alpha, cutoff):
    """Loop over explicit images: energy, forces and virial."""
    n = len(charges)
    inv = np.linalg.inv(cell)
    spacing = 1.0 / np.linalg.norm(inv.T, axis=1)
    reach = np.ceil(cutoff / spacing).astype(int) + 1
    energy = 0.0
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    for shift in itertools.product(*(range(-k, k + 1) for k in reach)):
        t = np.array(shift) @ cell
        d = positions[None, :, :] + t - positions[:, None, :]  # d[i, j] = r_j + t - r_i
        r = np.linalg.norm(d, axis=2)
        mask = (r < cutoff) & (r > 0)
        phi, dphi = real_space_kernel(np.where(mask, r, 1.0), alpha)
        qq = np.outer(charges, charges) * mask
        energy += 0.5 * np.sum(qq * phi)
        g = qq * dphi / np.where(mask, r, 1.0)
        forces += np.einsum("ij,ijk->ik", g, d)
        virial += 0.5 * np.einsum("ij,ija,ijb->ab", g, d, d)
    return energy, forces, virial


@pytest.mark.parametrize("cutoff", [3.0, 7.5, 12.0])
def test_real_space_sum_matches_brute_force_in_triclinic_cell(cutoff):
    rng = np.random.default_rng(4)
    cell = np.array([[6.0, 0.0, 0.0], [2.5, 5.0, 0.0], [-1.5, 1.0, 5.5]])
    positions = rng.random((10, 3)) @ cell + rng.normal(scale=3.0, size=(10, 3))
    charges = rng.normal(size=10)
    e_ref, f_ref, v_ref = brute_force_real_space(positions, cell, charges, 0.4, cutoff)
    energies, forces, virial = real_space_sum(positions, cell, charges, 0.4, cutoff)
    assert energies.sum() == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(forces, f_ref, atol=1e-10)
    np.testing.assert_allclose(
        virial,
        [v_ref[0, 0], v_ref[1, 1], v_ref[2, 2], v_ref[1, 2], v_ref[0, 2], v_ref[0, 1]],
        atol=1e-10,
    )


def test_reciprocal_vectors_half_space():
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.0, 0.5, 6.0]])
    m = reciprocal_vectors(cell, 0.6)
    norms = np.linalg.norm(m, axis=1)
    assert np.all(norms <= 0.6) and np.all(norms > 0)
    # no vector together with its negative
    keys = {tuple(np.round(v, 10)) for v in m}
    assert not any(tuple(np.round(-v, 10)) in keys for v in m)


def test_ewald_reciprocal_forces_are_gradient():
    rng = np.random.default_rng(5)
    cell = np.array([[7.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.5, -1.0, 8.0]])
    positions = rng.random((6, 3)) @ cell
    charges = rng.normal(size=6)
    _, forces, _ = ewald_reciprocal(positions, cell, charges, 0.6, 1.5)
    h = 1e-5
    for i, a in [(0, 0), (3, 1), (5, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[i, a] += h
        minus[i, a] -= h
        numerical = -(
            ewald_reciprocal(plus, cell, charges, 0.6, 1.5)[0].sum()
            - ewald_reciprocal(minus, cell, charges, 0.6, 1.5)[0].sum()
        ) / (2 * h)
        assert forces[i, a] == pytest.approx(numerical, abs=1e-8)


def test_pair_sum():
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    charges = np.array([1.0, -1.0, 0.5])
    energies, forces = pair_sum(positions, charges)
    r = np.linalg.norm(positions[:, None] - positions[None], axis=2)
    expected = sum(charges[i] * charges[j] / r[i, j] for i in range(3) for j in range(i + 1, 3))
    assert energies.sum() == pytest.approx(expected)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-14)
