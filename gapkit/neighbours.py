"""Neighbour lists: all pairs within a cutoff, periodic images included."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import minkowski_reduce
from vesin import NeighborList

__all__ = ["neighbour_pairs"]


def neighbour_pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, ...]:
    """Every pair ``(i, j, shift)`` with ``|r_j + shift @ cell - r_i| < cutoff``.

    Self pairs with a zero shift are excluded; a centre's own periodic images
    are included (cells smaller than the cutoff too). Computed with vesin's
    cell list (linear in the number of atoms); periodicity per direction from
    ``atoms.pbc``.

    Returns
    -------
    i, j : ndarray of int
        Sorted by ``i``, then ``j``.
    vectors : ndarray of shape (n_pairs, 3)
        ``r_j + shift @ cell - r_i`` in Å.
    shifts : ndarray of shape (n_pairs, 3) of int
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array
    positions = np.asarray(atoms.positions, dtype=float)
    op = wrap = None
    if pbc.all() and _skewed(cell):
        # A skewed basis of a lattice makes the cell-list search visit a volume
        # that grows with the skew (minutes for a2 + 1000 a1): search in the
        # Minkowski-reduced basis with positions wrapped into it, and express the
        # image shifts in the given basis again. The pairs and vectors are the same.
        cell_r, op = minkowski_reduce(cell, pbc=pbc)
        wrap = np.floor(positions @ np.linalg.inv(cell_r)).astype(int)
        positions = positions - wrap @ cell_r
        cell = cell_r
    finder = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, vectors = finder.compute(positions, cell, pbc, quantities="ijSD")
    if op is not None:
        shifts = (shifts - wrap[j] + wrap[i]) @ np.asarray(op, dtype=int)
    order = np.lexsort((j, i))
    return (
        i[order].astype(np.intp),
        j[order].astype(np.intp),
        vectors[order],
        shifts[order].astype(int),
    )


def _skewed(cell: np.ndarray) -> bool:
    """True when two cell vectors are far from a reduced basis (|cos| > 0.6)."""
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths == 0):
        return False
    cosines = (cell @ cell.T) / np.outer(lengths, lengths)
    return bool(np.any(np.abs(cosines[np.triu_indices(3, 1)]) > 0.6))
