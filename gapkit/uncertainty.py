"""Posterior variances of the sparse GP (arrays in, arrays out).

With posterior precision ``R^T R = K_MM + K_MN Lambda^-1 K_NM`` (the R factor
of the fit) and ``K_MM + jitter = L L^T``, a prediction ``f = k^T alpha`` with
row ``k`` (an energy row, a local-energy row or a force row) has variance

- SOR (subset of regressors): ``|R^-T k|^2``;
- DTC (deterministic training conditional): ``k** - |L^-1 k|^2 + |R^-T k|^2``,

where ``k**`` is the prior variance of ``f`` under the full kernel. The DTC form
grows back to the prior far from the sparse points; SOR shrinks to zero there.

Every function follows the array API (NumPy, CuPy, ...): the namespace is that
of the factor or feature arrays passed in.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .backend import namespace, solve_triangular
from .descriptors import StructureDescriptor
from .units import VOIGT_PAIRS

__all__ = [
    "sor_variance",
    "nystrom_variance",
    "energy_prior_variance",
    "force_prior_variance",
    "virial_prior_variance",
]


def sor_variance(rows, r_factor):
    """``|R^-T k|^2`` for each row ``k`` of ``rows`` (shape (n, M))."""
    xp = namespace(rows, r_factor)
    x = solve_triangular(xp, r_factor, rows.T, lower=False, trans=True)
    return xp.sum(x * x, axis=0)


def nystrom_variance(rows, l_factor):
    """``|L^-1 k|^2`` for each row ``k``: the part of the prior the sparse points explain."""
    xp = namespace(rows, l_factor)
    x = solve_triangular(xp, l_factor, rows.T, lower=True)
    return xp.sum(x * x, axis=0)


def energy_prior_variance(features, numbers: np.ndarray, zeta: int, delta: dict[int, float]):
    """Prior variances of the local energies and of their sum.

    Parameters
    ----------
    features : array of shape (n_atoms, n_features)
        Normalised descriptors, in any array-API namespace.
    numbers : ndarray of shape (n_atoms,)
        Atomic numbers (host array).

    Returns
    -------
    local : array of shape (n_atoms,)
        ``delta_s^2`` (unit-length descriptors), in the namespace of ``features``.
    total : float
        ``sum_{i,i'} k(q_i, q_i')`` over pairs of the same species.
    """
    xp = namespace(features)
    dev = array_api_compat.device(features)
    local = xp.asarray(np.array([delta[int(z)] ** 2 for z in numbers], dtype=float), device=dev)
    total = 0.0
    for z in np.unique(numbers):
        q = xp.take(features, xp.asarray(np.flatnonzero(numbers == z), device=dev), axis=0)
        total += delta[int(z)] ** 2 * float(xp.sum((q @ q.T) ** zeta))
    return local, total


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
    n_atoms = len(desc.numbers)
    order = np.argsort(desc.neighbour, kind="stable")
    bounds = np.searchsorted(desc.neighbour[order], np.arange(n_atoms + 1))
    out = []
    for j in range(n_atoms):
        pairs = order[bounds[j] : bounds[j + 1]]
        centres = desc.centre[pairs]
        z = desc.numbers[centres]
        same_host = z[:, None] == z[None, :]
        d2 = np.array([delta[int(x)] ** 2 for x in z])
        q = xp.asarray(desc.features[centres])
        dev = array_api_compat.device(q)
        same = xp.asarray(same_host, device=dev)
        s = xp.where(same, q @ q.T, 0.0)
        d2_col = xp.asarray(d2[:, None] * same_host, device=dev)
        c1 = d2_col * zeta * s ** (zeta - 1)
        c2 = d2_col * (zeta * (zeta - 1)) * s ** max(zeta - 2, 0)
        a = xp.asarray(desc.dq_dr[pairs], device=dev)  # (p, 3, D)
        comps = []
        for b in range(3):
            ab = a[:, b, :]
            aq = ab @ q.T  # (D_i . q_i')
            comps.append(xp.sum(c1 * (ab @ ab.T)) + xp.sum(c2 * aq * aq.T))
        out.append(xp.stack(comps))
    if not out:
        return xp.zeros((0, 3))
    return xp.stack(out)


def virial_prior_variance(desc: StructureDescriptor, zeta: int, delta: dict[int, float], xp=None):
    """Prior variance of each Voigt component of the virial ``V * stress``, shape (6,).

    The component ``W_ab = sum_i grad eps(q_i) . c_i`` with ``c_i`` the
    symmetrised strain derivative ``(dq_i/deps_ab + dq_i/deps_ba) / 2``, so
    ``Var W_ab = sum_{i,i'} c_i^T H(q_i, q_i') c_i'`` with the same mixed second
    derivative ``H`` as :func:`force_prior_variance`. Costs O(n_atoms^2 n_features).
    """
    xp = namespace(np.empty(0)) if xp is None else xp
    strain = xp.asarray(desc.dq_dstrain)  # (n, 3, 3, D)
    dev = array_api_compat.device(strain)
    q = xp.asarray(desc.features, device=dev)
    z = desc.numbers
    same_host = z[:, None] == z[None, :]
    d2 = np.array([delta[int(x)] ** 2 for x in z])
    same = xp.asarray(same_host, device=dev)
    s = xp.where(same, q @ q.T, 0.0)
    d2_col = xp.asarray(d2[:, None] * same_host, device=dev)
    c1 = d2_col * zeta * s ** (zeta - 1)
    c2 = d2_col * (zeta * (zeta - 1)) * s ** max(zeta - 2, 0)
    out = []
    for a, b in VOIGT_PAIRS:
        c = 0.5 * (strain[:, a, b, :] + strain[:, b, a, :])  # (n, D)
        cq = c @ q.T  # (c_i . q_i')
        out.append(xp.sum(c1 * (c @ c.T)) + xp.sum(c2 * cq * cq.T))
    return xp.stack(out)
