"""Design-matrix rows and predictions from descriptors (arrays in, arrays out).

For a structure with normalised descriptors ``q_i`` and sparse points ``q_m``
(each with a species and an energy scale ``delta_m``):

- energy row: ``K_E[m] = sum_i k(q_i, q_m)``;
- force rows: ``K_F[j, b, m] = -sum_(i,j) g_im (dq_i/dr_j[b] . q_m)`` with
  ``g_im = delta_m^2 zeta (q_i . q_m)^(zeta-1)``;
- virial rows (``V * stress``, ASE sign):
  ``K_V[a, b, m] = sum_i g_im (dq_i/deps_ab . q_m)``, symmetrised, Voigt order.

``k`` is zero between centres and sparse points of different species.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .descriptors import StructureDescriptor
from .units import VOIGT_PAIRS

__all__ = ["design_rows", "predict_structure"]

_VOIGT_A = np.array([a for a, _ in VOIGT_PAIRS])
_VOIGT_B = np.array([b for _, b in VOIGT_PAIRS])
#: Pairs handled at once when building force rows (bounds the temporary arrays).
PAIR_CHUNK = 4096


def _to_voigt(m: np.ndarray) -> np.ndarray:
    """Symmetrised Voigt components of ``m[..., 3, 3]`` -> ``[..., 6]``."""
    return 0.5 * (m[..., _VOIGT_A, _VOIGT_B] + m[..., _VOIGT_B, _VOIGT_A])


def _scatter_matrix(rows: np.ndarray, n_rows: int) -> scipy.sparse.csr_matrix:
    n = len(rows)
    return scipy.sparse.csr_matrix((np.ones(n), (rows, np.arange(n))), shape=(n_rows, n))


def design_rows(
    desc: StructureDescriptor,
    q_sparse: np.ndarray,
    sparse_numbers: np.ndarray,
    delta: np.ndarray,
    zeta: int,
    *,
    forces: bool = True,
    virial: bool = True,
) -> dict[str, np.ndarray]:
    """Rows of K_NM for one structure.

    Parameters
    ----------
    desc : StructureDescriptor
        With derivatives when ``forces`` or ``virial`` is requested.
    q_sparse : ndarray of shape (M, n_features)
    sparse_numbers : ndarray of shape (M,)
        Species (atomic number) of each sparse point.
    delta : ndarray of shape (M,)
        Energy scale in eV of each sparse point's species.
    zeta : int

    Returns
    -------
    dict
        ``"energy"``: (M,); ``"forces"``: (n_atoms, 3, M) when asked;
        ``"virial"``: (6, M) when asked (rows of ``V * stress``).
    """
    n_atoms = len(desc.numbers)
    m_total = len(q_sparse)
    out = {"energy": np.zeros(m_total)}
    if forces:
        out["forces"] = np.zeros((n_atoms, 3, m_total))
    if virial:
        v33 = np.zeros((3, 3, m_total))
    for z in np.unique(desc.numbers):
        cols = np.flatnonzero(sparse_numbers == z)
        if len(cols) == 0:
            continue
        centres = np.flatnonzero(desc.numbers == z)
        qs = q_sparse[cols]
        d2 = delta[cols] ** 2
        dots = desc.features[centres] @ qs.T
        out["energy"][cols] = (d2 * dots**zeta).sum(axis=0)
        if not (forces or virial):
            continue
        g = np.zeros((n_atoms, len(cols)))
        g[centres] = (d2 * zeta) * dots ** (zeta - 1)
        if virial:
            u = desc.dq_dstrain[centres].reshape(len(centres), 9, -1) @ qs.T  # (n, 9, Ms)
            v33[:, :, cols] = np.einsum("nm,nkm->km", g[centres], u).reshape(3, 3, -1)
        if forces:
            pairs = np.flatnonzero(desc.numbers[desc.centre] == z)
            acc = np.zeros((n_atoms, 3 * len(cols)))
            for start in range(0, len(pairs), PAIR_CHUNK):
                p = pairs[start : start + PAIR_CHUNK]
                t = desc.dq_dr[p] @ qs.T  # (P, 3, Ms)
                t *= g[desc.centre[p]][:, None, :]
                acc += _scatter_matrix(desc.neighbour[p], n_atoms) @ t.reshape(len(p), -1)
            out["forces"][:, :, cols] = -acc.reshape(n_atoms, 3, len(cols))
    if virial:
        out["virial"] = _to_voigt(np.moveaxis(v33, 2, 0)).T
    return out


def predict_structure(
    desc: StructureDescriptor,
    q_sparse: np.ndarray,
    sparse_numbers: np.ndarray,
    weights: np.ndarray,
    zeta: int,
    *,
    forces: bool = True,
    virial: bool = True,
    n_atoms: int | None = None,
) -> dict[str, np.ndarray]:
    """Local energies, forces and virial of one structure (or of some centres).

    Parameters
    ----------
    weights : ndarray of shape (M,)
        ``alpha_m * delta_m**2`` so that ``eps_i = sum_m w_m (q_i . q_m)^zeta``.
    n_atoms : int, optional
        Atoms of the whole structure, when ``desc`` holds a subset of the
        centres: forces then hold those centres' contributions to all atoms.

    Returns
    -------
    dict
        ``"energies"``: local energies of the centres in eV (without e0);
        ``"forces"``: (n_atoms, 3) in eV/Å; ``"virial"``: (3, 3), ``V * stress``
        in eV (ASE sign).
    """
    n_centres = len(desc.numbers)
    n_atoms = n_centres if n_atoms is None else n_atoms
    energies = np.zeros(n_centres)
    w = np.zeros_like(desc.features) if (forces or virial) else None
    for z in np.unique(desc.numbers):
        cols = np.flatnonzero(sparse_numbers == z)
        if len(cols) == 0:
            continue
        centres = np.flatnonzero(desc.numbers == z)
        qs = q_sparse[cols]
        dots = desc.features[centres] @ qs.T
        energies[centres] = dots**zeta @ weights[cols]
        if w is not None:
            w[centres] = (zeta * dots ** (zeta - 1) * weights[cols]) @ qs  # d eps_i / d q_i
    out = {"energies": energies}
    if forces:
        per_pair = np.einsum("pbf,pf->pb", desc.dq_dr, w[desc.centre])
        f = np.zeros((n_atoms, 3))
        for b in range(3):
            f[:, b] = -np.bincount(desc.neighbour, per_pair[:, b], minlength=n_atoms)
        out["forces"] = f
    if virial:
        out["virial"] = np.einsum("iabf,if->ab", desc.dq_dstrain, w)
    return out
