"""Pool selection and incremental updates."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from conftest import small_soap

from gapkit import GAPRegressor
from gapkit.active import label_structures, select_batch
from gapkit.exceptions import InvalidParameterError

#: ASE's Voigt order of the stress: xx, yy, zz, yz, xz, xy.
_VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def _dense_rows(soap, atoms, q_sparse, z_sparse, delta, zeta):
    """Energy, force and ``V * stress`` rows of the documented model, written out here.

    ``E = sum_i [e0(Z_i) + sum_m alpha_m delta_m^2 (q_i . q_m)^zeta]`` over sparse
    points ``m`` of the centre's species; forces are ``-dE/dr_j`` through
    ``dq_i/dr_j`` and ``V * stress`` is ``dE/d(strain)`` through ``dq_i/d(strain)``.
    """
    d = soap.features_and_derivatives(atoms)
    same = d.numbers[:, None] == z_sparse[None, :]
    dots = d.features @ q_sparse.T
    k = np.where(same, delta**2 * dots**zeta, 0.0)
    g = np.where(same, delta**2 * zeta * dots ** (zeta - 1), 0.0)  # dk/d(q_i . q_m)
    forces = np.zeros((len(atoms), 3, len(z_sparse)))
    np.add.at(
        forces, d.neighbour, -g[d.centre][:, None, :] * np.einsum("pbf,mf->pbm", d.dq_dr, q_sparse)
    )
    w = np.einsum("im,iabf,mf->abm", g, d.dq_dstrain, q_sparse)
    w = 0.5 * (w + w.transpose(1, 0, 2))
    return k.sum(axis=0), forces.reshape(-1, len(z_sparse)), np.array([w[a, b] for a, b in _VOIGT])


def test_partial_fit_equals_solving_from_scratch(cuau_frames):
    """fit(first) + partial_fit(rest) is the posterior mean of all the data.

    The reference shares no code with the estimator's solve: the design matrix is
    written out in :func:`_dense_rows` from the model's documented form, using only
    the descriptor (``features_and_derivatives``) and the fitted sparse points, e0
    and delta, which partial_fit must keep; the regularised least squares
    ``min |(y - A alpha) / sigma|^2 + alpha^T (K_MM + jitter) alpha`` is solved
    densely with NumPy, with sigmas from the documented conventions
    (``sigma_energy * sqrt(N)``, ``sigma_force``, ``sigma_virial * sqrt(N)``).
    """
    first, second = cuau_frames[:6], cuau_frames[6:]
    zeta, jitter, sigmas = 4, 1e-8, (0.002, 0.1, 0.1)
    model = GAPRegressor(
        small_soap(),
        zeta=zeta,
        jitter=jitter,
        sigma_energy=sigmas[0],
        sigma_force=sigmas[1],
        sigma_virial=sigmas[2],
        n_sparse=15,
        random_state=0,
    ).fit(first)
    before = model.predict(second)
    q_m, z_m, delta_m = model.sparse_features_, model.sparse_numbers_, model.delta_
    e0 = dict(model.e0_)
    model.partial_fit(second)
    frames = first + second
    np.testing.assert_array_equal(model.sparse_features_, q_m)
    assert model.e0_ == e0
    assert model.n_observations_ == {"energy": 12, "forces": 12 * 16 * 3, "virial": 12 * 6}

    rows, y, sigma = [], [], []
    for atoms in frames:
        n = len(atoms)
        e_row, f_rows, v_rows = _dense_rows(model.descriptor_, atoms, q_m, z_m, delta_m, zeta)
        rows += [e_row[None], f_rows, v_rows]
        y += [
            [atoms.get_potential_energy() - sum(e0[s] for s in atoms.get_chemical_symbols())],
            atoms.get_forces().ravel(),
            atoms.get_stress() * atoms.get_volume(),
        ]
        sigma += [
            [sigmas[0] * np.sqrt(n)],
            np.full(3 * n, sigmas[1]),
            np.full(6, sigmas[2] * np.sqrt(n)),
        ]
    a, y, sigma = np.vstack(rows), np.concatenate(y), np.concatenate(sigma)
    k_mm = np.where(z_m[:, None] == z_m[None, :], delta_m**2 * (q_m @ q_m.T) ** zeta, 0.0)
    for z in np.unique(z_m):  # jitter relative to the mean diagonal of each species' block
        block = np.flatnonzero(z_m == z)
        k_mm[block, block] += jitter * np.mean(np.diag(k_mm)[block])
    prior = np.linalg.cholesky(k_mm).T  # alpha^T K_MM alpha = |prior @ alpha|^2
    alpha, *_ = np.linalg.lstsq(
        np.vstack([a / sigma[:, None], prior]),
        np.concatenate([y / sigma, np.zeros(len(z_m))]),
        rcond=None,
    )

    np.testing.assert_allclose(
        model.coefficients_, alpha, rtol=1e-7, atol=1e-10 * np.abs(alpha).max()
    )
    n_e = [0] + list(np.cumsum([1 + 3 * len(f) + 6 for f in frames]))
    ref_energies = (a @ alpha)[n_e[:-1]] + [
        sum(e0[s] for s in f.get_chemical_symbols()) for f in frames
    ]
    np.testing.assert_allclose(model.predict(frames), ref_energies, rtol=0, atol=1e-8)
    # and it learned: errors on the added data went down
    labels = [a.get_potential_energy() for a in second]
    assert np.abs(model.predict(second) - labels).mean() < np.abs(before - labels).mean()


def test_select_batch_prefers_unfamiliar_and_diverse(cuau_model, cuau_frames):
    familiar = cuau_frames[0]
    strange = cuau_frames[1].copy()
    strange.set_cell(strange.cell.array * 0.9, scale_atoms=True)
    other = cuau_frames[2].copy()
    other.set_cell(other.cell.array * 1.08, scale_atoms=True)
    pool = [familiar, strange, strange.copy(), other]
    first = select_batch(cuau_model, pool, 1)
    assert first[0] in (1, 2)
    batch = select_batch(cuau_model, pool, 2)
    assert len(set(batch)) == 2
    assert not {1, 2} <= set(batch.tolist())  # the copy lost its score once its twin was taken
    with pytest.raises(InvalidParameterError, match="'k'"):
        select_batch(cuau_model, pool, 0)


def test_label_structures(cuau_frames):
    raw = [a.copy() for a in cuau_frames[:2]]
    for a in raw:
        a.calc = None
    labelled = label_structures(raw, EMT())
    ref = cuau_frames[0]
    assert labelled[0].get_potential_energy() == pytest.approx(ref.get_potential_energy())
    assert labelled[0].get_stress().shape == (6,)
    assert raw[0].calc is None
