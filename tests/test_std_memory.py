"""The std path in O(N M) memory: chunked blocks give the one-chunk numbers, and the
tracemalloc peak of energy and force stds grows linearly with the number of atoms."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import scipy.linalg
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import small_soap

from gapkit import GAPRegressor, design, prediction, uncertainty
from gapkit.backend import resolve_device
from gapkit.design import design_rows, local_energy_rows
from gapkit.units import VOIGT_PAIRS

UNIT = dict.fromkeys(prediction.STD_KINDS, 1.0)


def si_cell(repeat, rattle=0.05, seed=1, strain=0.0):
    atoms = bulk("Si", "diamond", a=5.43 * (1 + strain), cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def lj_labelled(atoms):
    """A copy labelled by a smooth Lennard-Jones potential (EMT has no Si)."""
    atoms = atoms.copy()
    atoms.calc = LennardJones(sigma=2.1, epsilon=0.5, rc=4.5, smooth=True)
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture(scope="module")
def si_fitted():
    """A tiny Si model (n_max 3, l_max 2, 20 sparse points) on three 64-atom cells."""
    train = [
        lj_labelled(si_cell((2, 2, 2), 0.1, seed, strain))
        for seed, strain in [(0, 0.0), (1, 0.02), (2, -0.02)]
    ]
    model = GAPRegressor(
        small_soap(n_max=3, l_max=2),
        n_sparse=20,
        sigma_energy=0.05,
        sigma_force=0.5,
        sigma_virial=0.5,
        random_state=0,
    )
    return model.fit(train).fitted_


def arrays_of(fitted, variance="dtc", scale=UNIT):
    arrays = prediction.PredictionArrays.of(fitted, resolve_device("cpu"), True)
    return dataclasses.replace(arrays, variance=variance, std_scale=dict(scale))


def dense_stds(fitted, atoms, variance):
    """The stds as computed before blocks: the whole structure's derivatives at once,
    the N x N kernel matrices, every row stacked into one solve."""
    desc = fitted.descriptor.features_and_derivatives(atoms)
    qs, zs, dl, zeta = fitted.sparse_features, fitted.sparse_numbers, fitted.delta, fitted.zeta
    n, m = len(atoms), len(zs)
    local = local_energy_rows(desc.features, desc.numbers, qs, zs, dl, zeta)
    rows = design_rows(desc, qs, zs, dl, zeta)
    k = np.vstack([local, local.sum(0, keepdims=True), rows["forces"].reshape(3 * n, m)])
    k = np.vstack([k, rows["virial"]])
    var = np.sum(scipy.linalg.solve_triangular(fitted.r_factor, k.T, trans="T") ** 2, axis=0)
    if variance == "dtc":
        nys = np.sum(
            scipy.linalg.solve_triangular(fitted.sparse_cholesky, k.T, lower=True) ** 2, axis=0
        )
        d2 = float(dl[0]) ** 2  # one species
        q = desc.features
        s = q @ q.T
        c1, c2 = d2 * zeta * s ** (zeta - 1), d2 * zeta * (zeta - 1) * s ** (zeta - 2)
        force_prior = np.zeros((n, 3))
        for j in range(n):
            p = np.flatnonzero(desc.neighbour == j)
            ci = desc.centre[p]
            for b in range(3):
                a = desc.dq_dr[p, b]
                aq = a @ q[ci].T
                force_prior[j, b] = np.sum(c1[np.ix_(ci, ci)] * (a @ a.T)) + np.sum(
                    c2[np.ix_(ci, ci)] * aq * aq.T
                )
        virial_prior = []
        for a, b in VOIGT_PAIRS:
            c = 0.5 * (desc.dq_dstrain[:, a, b] + desc.dq_dstrain[:, b, a])
            cq = c @ q.T
            virial_prior.append(np.sum(c1 * (c @ c.T)) + np.sum(c2 * cq * cq.T))
        prior = np.concatenate(
            [np.full(n, d2), [d2 * np.sum(s**zeta)], force_prior.ravel(), virial_prior]
        )
        var = var + (prior - nys)
    std = np.sqrt(np.clip(var, 0.0, None))
    return {
        "energies_std": std[:n],
        "energy_std": std[n],
        "forces_std": std[n + 1 : 4 * n + 1].reshape(n, 3),
        "stress_std": std[4 * n + 1 :] / atoms.get_volume(),
    }


def assert_rel(actual, desired, rtol=1e-10):
    """Agreement relative to the largest entry (stds of one kind share a scale)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert np.max(np.abs(actual - desired)) <= rtol * np.max(np.abs(desired))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of every kind far smaller than the structure (none divides it)."""
    monkeypatch.setattr(prediction, "STD_BLOCK_BYTES", 1)  # MIN_STD_BLOCK atoms each
    monkeypatch.setattr(prediction, "MIN_STD_BLOCK", 45)
    monkeypatch.setattr(prediction, "CENTRE_CHUNK", 17)
    monkeypatch.setattr(prediction, "STD_ROW_BLOCK", 50)
    monkeypatch.setattr(uncertainty, "PRIOR_BLOCK", 23)
    monkeypatch.setattr(uncertainty, "SOLVE_BLOCK", 70)


KEYS = {
    (True, True): ("energies_std", "energy_std", "forces_std", "stress_std"),
    (False, True): ("energies_std", "energy_std", "stress_std"),
    (False, False): ("energies_std", "energy_std"),
}


@pytest.mark.parametrize("variance", ["dtc", "sor"])
def test_blocked_stds_equal_the_dense_ones(si_fitted, variance, request):
    """A long cell (its blocks see only part of it around them), one chunk and then
    small blocks of everything: the same stds and predictions as the dense path."""
    atoms = si_cell((2, 2, 6))  # 192 atoms, 32.6 Å along z
    arrays = arrays_of(si_fitted, variance)
    soap = si_fitted.descriptor
    ref = dense_stds(si_fitted, atoms, variance)
    plain = prediction._predict_one(soap, atoms, arrays, True, True, False)
    one_chunk = {
        flags: prediction._predict_one(soap, atoms, arrays, *flags, True) for flags in KEYS
    }
    request.getfixturevalue("small_blocks")
    around = []  # centres computed per block of the DTC force stds
    block_variance = prediction._block_force_variance

    def spy(arrays, features, numbers, centres, block, kept):
        around.append(len(centres))
        return block_variance(arrays, features, numbers, centres, block, kept)

    request.getfixturevalue("monkeypatch").setattr(prediction, "_block_force_variance", spy)
    blocked = {flags: prediction._predict_one(soap, atoms, arrays, *flags, True) for flags in KEYS}
    if variance == "dtc":  # several blocks, some seeing only part of the cell
        assert len(around) > 1 and min(around) < len(atoms)
    for flags, keys in KEYS.items():
        for got in (one_chunk[flags], blocked[flags]):
            for key in keys:
                assert_rel(got[key], ref[key])
    for key in ("energies", "forces", "stress"):
        assert_rel(blocked[True, True][key], plain[key])


def test_std_scales_per_kind(si_fitted):
    atoms = si_cell((2, 2, 2))
    soap = si_fitted.descriptor
    scale = {"energy": 2.0, "forces": 3.0, "stress": 5.0}
    unit, scaled = (
        prediction._predict_one(soap, atoms, arrays_of(si_fitted, scale=s), True, True, True)
        for s in (UNIT, scale)
    )
    for key, kind in [
        ("energies_std", "energy"),
        ("energy_std", "energy"),
        ("forces_std", "forces"),
        ("stress_std", "stress"),
    ]:
        np.testing.assert_allclose(scaled[key], scale[kind] * np.asarray(unit[key]), rtol=1e-14)
    assert prediction._std_scales(1.5) == dict.fromkeys(prediction.STD_KINDS, 1.5)
    assert prediction._std_scales(scale) == scale
    arrays = prediction.PredictionArrays.of(si_fitted, resolve_device("cpu"), True)
    assert set(arrays.std_scale) == set(prediction.STD_KINDS)


# ------------------------------------------------------------------- memory
def std_peaks(fitted, cells, forces: bool) -> list[tuple[int, int]]:
    """(atoms, tracemalloc peak in bytes) of the DTC std path per cell."""
    arrays = arrays_of(fitted)
    soap = fitted.descriptor
    prediction._predict_one(soap, si_cell((1, 1, 1)), arrays, forces, False, True)  # compile
    out = []
    for repeat in cells:
        atoms = si_cell(repeat)
        tracemalloc.start()
        try:
            prediction._predict_one(soap, atoms, arrays, forces, False, True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        out.append((len(atoms), peak))
    return out


def linear(peaks, tolerance=0.1) -> bool:
    """The largest cell's peak per atom is no more than the smaller cells' (fixed costs
    make it fall at first; an N^2 term makes it grow)."""
    per_atom = [p / n for n, p in peaks]
    return per_atom[-1] <= (1 + tolerance) * min(per_atom[:-1])


CUBES = [(3, 3, 3), (4, 4, 4), (5, 5, 5)]  # 216, 512 and 1000 atoms


def test_energy_std_memory_is_linear(si_fitted):
    peaks = std_peaks(si_fitted, CUBES, forces=False)
    assert linear(peaks), peaks


def test_memory_check_sees_a_quadratic_path(si_fitted, monkeypatch):
    """The check above fails for the former N x N energy prior (one block of all rows):
    41 % more per atom at 1000 atoms than at 512."""
    monkeypatch.setattr(uncertainty, "PRIOR_BLOCK", 10**9)
    assert not linear(std_peaks(si_fitted, CUBES, forces=False))


def test_force_std_memory_is_linear(si_fitted, monkeypatch):
    """DTC force stds in blocks of 64 atoms, on cells long in z (so that the centres
    around a block are a fixed number): per atom the peak does not grow, and it stays
    below half of what the derivatives of the whole structure take."""
    monkeypatch.setattr(prediction, "STD_BLOCK_BYTES", 1)
    monkeypatch.setattr(prediction, "MIN_STD_BLOCK", 64)
    monkeypatch.setattr(prediction, "CENTRE_CHUNK", 32)
    monkeypatch.setattr(design, "PAIR_CHUNK", 512)
    monkeypatch.setattr(uncertainty, "PRIOR_BLOCK", 32)
    peaks = std_peaks(si_fitted, [(2, 2, 8), (2, 2, 16), (2, 2, 24)], forces=True)
    assert linear(peaks), peaks
    atoms = si_cell((2, 2, 24))
    rows_per_atom = 1 + len(si_fitted.descriptor.neighbour_list(atoms)[0]) / len(atoms)
    derivative_bytes = len(atoms) * rows_per_atom * 3 * si_fitted.descriptor.n_features * 8
    assert peaks[-1][1] < 0.5 * derivative_bytes, (peaks, derivative_bytes)
