"""Posterior variances of the sparse GP (arrays in, arrays out).

With posterior precision ``R^T R = K_MM + K_MN Lambda^-1 K_NM`` (the R factor
of the fit) and ``K_MM + jitter = L L^T``, a prediction ``f = k^T alpha`` with
row ``k`` (an energy row, a local-energy row or a force row) has variance

- SOR (subset of regressors): ``|R^-T k|^2``;
- DTC (deterministic training conditional): ``k** - |L^-1 k|^2 + |R^-T k|^2``,

where ``k**`` is the prior variance of ``f`` under the full kernel. The DTC form
grows back to the prior far from the sparse points; SOR shrinks to zero there.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .descriptors import StructureDescriptor

__all__ = [
    "sor_variance",
    "nystrom_variance",
    "energy_prior_variance",
    "force_prior_variance",
]


def sor_variance(rows: np.ndarray, r_factor: np.ndarray) -> np.ndarray:
    """``|R^-T k|^2`` for each row ``k`` of ``rows`` (shape (n, M))."""
    x = scipy.linalg.solve_triangular(r_factor, rows.T, trans="T", lower=False,
                                      check_finite=False)
    return np.einsum("mn,mn->n", x, x)


def nystrom_variance(rows: np.ndarray, l_factor: np.ndarray) -> np.ndarray:
    """``|L^-1 k|^2`` for each row ``k``: the part of the prior the sparse points explain."""
    x = scipy.linalg.solve_triangular(l_factor, rows.T, lower=True, check_finite=False)
    return np.einsum("mn,mn->n", x, x)


def energy_prior_variance(
    features: np.ndarray, numbers: np.ndarray, zeta: int, delta: dict[int, float]
) -> tuple[np.ndarray, float]:
    """Prior variances of the local energies and of their sum.

    Returns
    -------
    local : ndarray of shape (n_atoms,)
        ``delta_s^2`` (unit-length descriptors).
    total : float
        ``sum_{i,i'} k(q_i, q_i')`` over pairs of the same species.
    """
    local = np.array([delta[int(z)] ** 2 for z in numbers])
    total = 0.0
    for z in np.unique(numbers):
        q = features[numbers == z]
        total += delta[int(z)] ** 2 * float(np.sum((q @ q.T) ** zeta))
    return local, total


def force_prior_variance(
    desc: StructureDescriptor, zeta: int, delta: dict[int, float]
) -> np.ndarray:
    """Prior variance of each force component, shape (n_atoms, 3).

    ``F_jb = -sum_i grad eps(q_i) . D_i`` with ``D_i = dq_i/dr_jb``, so
    ``Var F_jb = sum_{i,i'} D_i^T H(q_i, q_i') D_i'`` with the mixed second
    derivative of the kernel ``H = delta^2 zeta [s^(zeta-1) I +
    (zeta-1) s^(zeta-2) q_i' q_i^T]``, ``s = q_i . q_i'``, over centres of the
    same species.
    """
    n_atoms = len(desc.numbers)
    out = np.zeros((n_atoms, 3))
    order = np.argsort(desc.neighbour, kind="stable")
    bounds = np.searchsorted(desc.neighbour[order], np.arange(n_atoms + 1))
    for j in range(n_atoms):
        pairs = order[bounds[j] : bounds[j + 1]]
        centres = desc.centre[pairs]
        z = desc.numbers[centres]
        q = desc.features[centres]
        same = z[:, None] == z[None, :]
        d2 = np.array([delta[int(x)] ** 2 for x in z])
        s = np.where(same, q @ q.T, 0.0)
        c1 = d2[:, None] * zeta * s ** (zeta - 1) * same
        c2 = d2[:, None] * zeta * (zeta - 1) * s ** max(zeta - 2, 0) * same
        for b in range(3):
            a = desc.dq_dr[pairs, b, :]
            aq = a @ q.T  # (D_i . q_i')
            out[j, b] = np.sum(c1 * (a @ a.T)) + np.sum(c2 * aq * aq.T)
    return out
