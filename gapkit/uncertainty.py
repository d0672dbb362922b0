"""Posterior variances of the sparse GP (arrays in, arrays out).

With posterior precision ``R^T R = K_MM + K_MN Lambda^-1 K_NM`` (the R factor
of the fit) and ``K_MM + jitter = L L^T``, a prediction ``f = k^T alpha`` with
row ``k`` (an energy row, a local-energy row or a force row) has variance

- SOR (subset of regressors): ``|R^-T k|^2``;
- DTC (deterministic training conditional): ``k** - |L^-1 k|^2 + |R^-T k|^2``,

where ``k**`` is the prior variance of ``f`` under the full kernel. The DTC form
grows back to the prior far from the sparse points; SOR shrinks to zero there.

Memory: nothing here holds an ``n_atoms x n_atoms`` array. The prior variances
of the total energy and of the virial are double sums over all pairs of
centres; they are summed in blocks of :data:`PRIOR_BLOCK` rows (memory
``O(PRIOR_BLOCK * n_atoms)``), over the upper triangle only (the summands are
symmetric in the two centres, so the off-diagonal blocks count twice). The
triangular solves of :func:`sor_variance` and :func:`nystrom_variance` take
:data:`SOLVE_BLOCK` rows at a time (memory ``O(SOLVE_BLOCK * M)`` besides the
rows themselves). The force prior needs, for each atom ``j``, the derivatives
``dq_i/dr_j`` of the centres ``i`` around it, one atom at a time.

Every function follows the array API (NumPy, CuPy, ...): the namespace is that
of the factor or feature arrays passed in.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
from threadpoolctl import ThreadpoolController

from .backend import namespace, solve_triangular
from .descriptors import StructureDescriptor
from .units import VOIGT_PAIRS

__all__ = [
    "PRIOR_BLOCK",
    "SOLVE_BLOCK",
    "sor_variance",
    "nystrom_variance",
    "energy_prior_variance",
    "force_prior_variance",
    "pair_force_prior_variance",
    "virial_prior_variance",
]

#: Rows of the centre-by-centre kernel blocks held at once by
#: :func:`energy_prior_variance` and :func:`virial_prior_variance`: a block is
#: ``PRIOR_BLOCK x n_atoms`` (8 MiB per 4096 atoms for each temporary).
PRIOR_BLOCK = 256
#: Rows ``k`` whose triangular solve :func:`sor_variance` and
#: :func:`nystrom_variance` hold at once (``SOLVE_BLOCK x M`` temporaries).
SOLVE_BLOCK = 4096


_threadpools: list = []


def _one_blas_thread():
    """A context with host BLAS on one thread (the controller is found once: looking
    the libraries up costs milliseconds)."""
    if not _threadpools:
        _threadpools.append(ThreadpoolController())
    return _threadpools[0].limit(limits=1, user_api="blas")


def _row_blocks(n: int, size: int):
    return ((start, min(start + size, n)) for start in range(0, n, size))


def _solved_norms(rows, factor, *, lower: bool, trans: bool):
    xp = namespace(rows, factor)
    n = rows.shape[0]
    if n <= SOLVE_BLOCK:
        x = solve_triangular(xp, factor, rows.T, lower=lower, trans=trans)
        return xp.sum(x * x, axis=0)
    parts = []
    for start, stop in _row_blocks(n, SOLVE_BLOCK):
        x = solve_triangular(xp, factor, rows[start:stop, :].T, lower=lower, trans=trans)
        parts.append(xp.sum(x * x, axis=0))
    return xp.concat(parts)


def sor_variance(rows, r_factor):
    """``|R^-T k|^2`` for each row ``k`` of ``rows`` (shape (n, M)), in blocks of rows."""
    return _solved_norms(rows, r_factor, lower=False, trans=True)


def nystrom_variance(rows, l_factor):
    """``|L^-1 k|^2`` for each row ``k``: the part of the prior the sparse points explain."""
    return _solved_norms(rows, l_factor, lower=True, trans=False)


def _species_rows(numbers: np.ndarray):
    """Host index arrays of the centres of each species, in order of atomic number."""
    return [(int(z), np.flatnonzero(numbers == z)) for z in np.unique(numbers)]


def _triangle_sum(xp, f, width: int) -> float:
    """``sum`` over the pairs of a symmetric summand from the block rows ``f``
    (columns from the block's first row on; its first ``width`` columns are
    the diagonal block, counted once, the rest twice)."""
    return 2.0 * float(xp.sum(f)) - float(xp.sum(f[:, :width]))


def energy_prior_variance(features, numbers: np.ndarray, zeta: int, delta: dict[int, float]):
    """Prior variances of the local energies and of their sum.

    Parameters
    ----------
    features : array of shape (n_atoms, n_features)
        Normalised descriptors, in any array-API namespace.
    numbers : ndarray of shape (n_atoms,)
        Atomic numbers (host array).
    zeta : int
    delta : dict
        Energy scale in eV per atomic number.

    Returns
    -------
    local : array of shape (n_atoms,)
        ``delta_s^2`` (unit-length descriptors), in the namespace of ``features``.
    total : float
        ``sum_{i,i'} k(q_i, q_i')`` over pairs of the same species.

    Notes
    -----
    The double sum is taken over blocks of :data:`PRIOR_BLOCK` rows and the
    columns from the block on (memory ``O(PRIOR_BLOCK * n_atoms)``).
    """
    xp = namespace(features)
    dev = array_api_compat.device(features)
    local = xp.asarray(np.array([delta[int(z)] ** 2 for z in numbers], dtype=float), device=dev)
    total = 0.0
    for z, idx in _species_rows(numbers):
        q = xp.take(features, xp.asarray(idx, device=dev), axis=0)
        part = 0.0
        for start, stop in _row_blocks(len(idx), PRIOR_BLOCK):
            k = (q[start:stop, :] @ q[start:, :].T) ** zeta
            part += _triangle_sum(xp, k, stop - start)
        total += delta[z] ** 2 * part
    return local, total


def pair_force_prior_variance(
    features, numbers, centre, neighbour, dq_dr, n_out: int, zeta, delta, xp
):
    """Prior force variances of atoms ``0 .. n_out - 1`` from the pairs that end on them.

    ``centre`` indexes ``features`` and ``numbers`` (host arrays); ``neighbour``
    is the atom (in ``0 .. n_out - 1``) of each row of ``dq_dr``. Every pair
    ``(i, j)`` with ``j`` among those atoms must be present.

    Per atom ``j`` with ``p`` centres around it, ``A`` (p, 3, D) their
    derivatives and ``C1``, ``C2`` (p, p) the kernel factors of ``H``:
    ``sum_i A_ib . (C1 A_b)_i`` (one product ``C1 @ A``) plus
    ``sum_(i,i') C2_ii' U_ibi' U_i'bi`` with ``U_ibi' = A_ib . q_i'`` (one
    product ``A @ Q^T``). The products are small, so host BLAS runs on one
    thread here (its threads only add synchronisation, badly so on a busy
    machine: 8x slower measured).
    """
    order = np.argsort(neighbour, kind="stable")
    bounds = np.searchsorted(neighbour[order], np.arange(n_out + 1))
    one_species = len(np.unique(numbers[centre])) <= 1
    out = []
    with _one_blas_thread():
        for j in range(n_out):
            pairs = order[bounds[j] : bounds[j + 1]]
            centres = centre[pairs]
            p = len(pairs)
            z = numbers[centres]
            q = xp.asarray(features[centres])
            dev = array_api_compat.device(q)
            s = q @ q.T
            if one_species:
                d2 = delta[int(z[0])] ** 2 if p else 0.0
                c1 = (d2 * zeta) * s ** (zeta - 1)
                c2 = (d2 * zeta * (zeta - 1)) * s ** max(zeta - 2, 0)
            else:
                same_host = z[:, None] == z[None, :]
                d2 = np.array([delta[int(x)] ** 2 for x in z])
                s = xp.where(xp.asarray(same_host, device=dev), s, 0.0)
                d2_col = xp.asarray(d2[:, None] * same_host, device=dev)
                c1 = d2_col * zeta * s ** (zeta - 1)
                c2 = d2_col * (zeta * (zeta - 1)) * s ** max(zeta - 2, 0)
            a = xp.asarray(dq_dr[pairs], device=dev)  # (p, 3, D)
            flat = xp.reshape(a, (p, -1))
            first = xp.sum(xp.reshape((c1 @ flat) * flat, (p, 3, -1)), axis=(0, 2))
            u = xp.reshape(xp.reshape(a, (3 * p, -1)) @ q.T, (p, 3, p))  # A_ib . q_i'
            second = xp.sum(c2[:, None, :] * u * xp.permute_dims(u, (2, 1, 0)), axis=(0, 2))
            out.append(first + second)
    if not out:
        return xp.zeros((0, 3))
    return xp.stack(out)


def force_prior_variance(desc: StructureDescriptor, zeta: int, delta: dict[int, float], xp=None):
    """Prior variance of each force component, shape (n_atoms, 3).

    ``F_jb = -sum_i grad eps(q_i) . D_i`` with ``D_i = dq_i/dr_jb``, so
    ``Var F_jb = sum_{i,i'} D_i^T H(q_i, q_i') D_i'`` with the mixed second
    derivative of the kernel ``H = delta^2 zeta [s^(zeta-1) I +
    (zeta-1) s^(zeta-2) q_i' q_i^T]``, ``s = q_i . q_i'``, over centres of the
    same species.

    Parameters
    ----------
    xp : array namespace, optional
        Where to compute (NumPy when None); the descriptor's host arrays are
        moved there one atom at a time.
    """
    xp = namespace(np.empty(0)) if xp is None else xp
    return pair_force_prior_variance(
        desc.features,
        desc.numbers,
        desc.centre,
        desc.neighbour,
        desc.dq_dr,
        len(desc.numbers),
        zeta,
        delta,
        xp,
    )


def _symmetric_strain(dq_dstrain: np.ndarray) -> np.ndarray:
    """``(dq/deps_ab + dq/deps_ba) / 2`` in Voigt order, (n, 6, n_features), from (n, 3, 3, D)."""
    return np.stack([0.5 * (dq_dstrain[:, a, b] + dq_dstrain[:, b, a]) for a, b in VOIGT_PAIRS], 1)


def _virial_prior(features, numbers: np.ndarray, strain, zeta: int, delta, xp):
    """:func:`virial_prior_variance` from the symmetrised strain derivatives
    ``strain`` (n, 6, D) (host arrays), in blocks of :data:`PRIOR_BLOCK` rows."""
    total = np.zeros(6)
    for z, idx in _species_rows(numbers):
        c_all = xp.asarray(strain[idx])  # (n_z, 6, D)
        dev = array_api_compat.device(c_all)
        q = xp.asarray(features[idx], device=dev)
        n = len(idx)
        d2 = delta[z] ** 2
        for start, stop in _row_blocks(n, PRIOR_BLOCK):
            width = stop - start
            q_b, q_c = q[start:stop, :], q[start:, :]
            s = q_b @ q_c.T
            c1 = (d2 * zeta) * s ** (zeta - 1)
            c2 = (d2 * zeta * (zeta - 1)) * s ** max(zeta - 2, 0)
            for v in range(6):
                c_b, c_c = c_all[start:stop, v, :], c_all[start:, v, :]
                # c2[i, i'] (c_i . q_i') (c_i' . q_i)
                f = c1 * (c_b @ c_c.T) + c2 * (c_b @ q_c.T) * (q_b @ c_c.T)
                total[v] += _triangle_sum(xp, f, width)
    return xp.asarray(total)


def virial_prior_variance(desc: StructureDescriptor, zeta: int, delta: dict[int, float], xp=None):
    """Prior variance of each Voigt component of the virial ``V * stress``, shape (6,).

    The component ``W_ab = sum_i grad eps(q_i) . c_i`` with ``c_i`` the
    symmetrised strain derivative ``(dq_i/deps_ab + dq_i/deps_ba) / 2``, so
    ``Var W_ab = sum_{i,i'} c_i^T H(q_i, q_i') c_i'`` with the same mixed second
    derivative ``H`` as :func:`force_prior_variance`. Costs O(n_atoms^2
    n_features) time and, in blocks of :data:`PRIOR_BLOCK` rows,
    O(PRIOR_BLOCK * n_atoms) memory besides the strain derivatives.
    """
    xp = namespace(np.empty(0)) if xp is None else xp
    return _virial_prior(
        desc.features, desc.numbers, _symmetric_strain(desc.dq_dstrain), zeta, delta, xp
    )
