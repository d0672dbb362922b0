"""Neighbour lists: all pairs within a cutoff, periodic images included."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list as _ase_neighbor_list

__all__ = ["neighbour_pairs"]

#: Above this many candidate (pair, image) distances, ASE's linear-scaling
#: cell-list implementation is used instead of the dense one.
DENSE_LIMIT = 4_000_000


def neighbour_pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, ...]:
    """Every pair ``(i, j, shift)`` with ``|r_j + shift @ cell - r_i| < cutoff``.

    Self pairs with a zero shift are excluded; a centre's own periodic images
    are included (cells smaller than the cutoff).

    Returns
    -------
    i, j : ndarray of int
        Sorted by ``i``.
    vectors : ndarray of shape (n_pairs, 3)
        ``r_j + shift @ cell - r_i`` in Å.
    shifts : ndarray of shape (n_pairs, 3) of int
    """
    n = len(atoms)
    pbc = atoms.pbc
    cell = atoms.cell.array
    n_images = np.zeros(3, dtype=int)
    if pbc.any():
        recip = np.linalg.pinv(cell).T  # rows b_k with a_i . b_k = delta_ik
        spacing = 1.0 / np.maximum(np.linalg.norm(recip, axis=1), 1e-300)
        n_images[pbc] = np.ceil(cutoff / spacing[pbc] + 0.5).astype(int)
    n_shift = int(np.prod(2 * n_images + 1))
    if n * n * n_shift > DENSE_LIMIT:
        i, j, d, s = _ase_neighbor_list("ijDS", atoms, cutoff, self_interaction=False)
        order = np.argsort(i, kind="stable")
        return i[order], j[order], d[order], s[order]

    ranges = [np.arange(-k, k + 1) for k in n_images]
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    pos = atoms.positions
    if pbc.any():
        frac = np.linalg.lstsq(cell.T, pos.T, rcond=None)[0].T if not pbc.all() else (
            pos @ np.linalg.inv(cell))
        dfrac = frac[None, :, :] - frac[:, None, :]  # (i, j, 3)
        wrap = np.where(pbc, np.round(dfrac), 0.0)
        base = pos[None, :, :] - pos[:, None, :] - wrap @ cell  # r_j - r_i, nearest image
    else:
        wrap = np.zeros((n, n, 3))
        base = pos[None, :, :] - pos[:, None, :]
    vec = base[:, :, None, :] + (shifts @ cell)[None, None, :, :]  # (i, j, s, 3)
    dist2 = np.einsum("ijsk,ijsk->ijs", vec, vec)
    mask = dist2 < cutoff * cutoff
    zero = np.flatnonzero(np.all(shifts == 0, axis=1))[0]
    idx = np.arange(n)
    self_zero = (idx[:, None] == idx[None, :])[:, :, None] & (np.arange(n_shift) == zero)
    # exclude i == j at zero total shift (the shift is relative to the nearest image)
    mask &= ~(self_zero & np.all(wrap == 0, axis=2)[:, :, None])
    ii, jj, ss = np.nonzero(mask)
    total_shift = (shifts[ss] - wrap[ii, jj]).astype(int)
    return ii, jj, vec[ii, jj, ss], total_shift
