"""Neighbour lists: all pairs within a cutoff, periodic images included."""

from __future__ import annotations

import numpy as np
from ase import Atoms
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
    finder = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, vectors = finder.compute(
        np.asarray(atoms.positions, dtype=float), cell, pbc, quantities="ijSD"
    )
    order = np.lexsort((j, i))
    return (
        i[order].astype(np.intp),
        j[order].astype(np.intp),
        vectors[order],
        shifts[order].astype(int),
    )
