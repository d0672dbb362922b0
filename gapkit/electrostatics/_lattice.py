"""Lattice-basis reduction for the Ewald methods: why the cell is reduced first.

Everything the Ewald methods lay out along the cell vectors depends on the
*basis*, not only on the lattice: the PME mesh (K_a points along vector a), the
range of integer wave vectors of the direct Ewald sum (|n_a| ≤ m_c |a_a|), and
the bins and image stencil of the real-space search (bins across the planes of
the cell). A valid but very skewed basis of an ordinary lattice, e.g. the cubic
cell (a₁, a₂, a₃) written as (a₁, a₂ + 7a₁, a₃ + 5a₁ − 9a₂), has long, nearly
parallel vectors and thin cells between planes: the mesh, the wave-vector box
and the stencil grow with the skew, and the SPME error model (calibrated on
near-orthogonal cells) no longer holds. A Minkowski-reduced basis of the same
lattice has the shortest possible vectors, with angles between 60° and 120°, so
the methods see the same cell whatever basis the user wrote.

The energy, forces and stress are properties of the lattice and the positions,
not of the basis, so reducing the cell (and wrapping the positions into it)
changes nothing in the results beyond the tuning; forces stay in the order of
the atoms as given.

Reduction is skipped, and the cell returned unchanged, when no vector can be
shortened by adding or subtracting the others (the 3-D Minkowski conditions with
coefficients in {-1, 0, 1}); this keeps the usual cells (orthorhombic,
hexagonal, the primitive cells of ``ase.build.bulk``) exactly as given,
vector order included, and costs a few microseconds.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase.geometry import minkowski_reduce

__all__ = ["reduce_cell", "is_reduced"]

#: Relative tolerance on squared lengths below which a vector does not count as shorter.
_TOLERANCE = 1e-10

#: Integer combinations x of the three vectors with x_a ∈ {-1, 0, 1}, x ≠ 0.
_COMBINATIONS = np.array(
    [x for x in itertools.product((-1, 0, 1), repeat=3) if any(x)], dtype=float
)

#: ``_USES[k, a]``: whether combination k contains vector a (x_a ≠ 0).
_USES = _COMBINATIONS != 0.0


def is_reduced(cell: np.ndarray) -> bool:
    """Whether no lattice vector of ``cell`` can be shortened by adding ±1 of the others.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å (linearly independent).

    Returns
    -------
    bool
        True when, for every vector a, ``|a| ≤ |a ± b ± c|`` (with any of b, c
        left out). In three dimensions this is Minkowski reduction up to the
        order of the vectors.
    """
    cell = np.asarray(cell, dtype=float)
    lengths2 = np.einsum("ij,ij->i", cell, cell)
    combos = _COMBINATIONS @ cell
    norms2 = np.einsum("ij,ij->i", combos, combos)
    shortest = np.where(_USES, norms2[:, None], np.inf).min(axis=0)  # per vector a
    return bool(np.all(shortest >= lengths2 * (1.0 - _TOLERANCE)))


def reduce_cell(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Minkowski-reduced basis of a 3-D lattice, or the cell itself if already reduced.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å (linearly independent, finite).

    Returns
    -------
    reduced : ndarray of shape (3, 3)
        Lattice vectors of the same lattice, as rows in Å: ``cell`` itself when
        :func:`is_reduced`, otherwise ``op @ cell`` from
        :func:`ase.geometry.minkowski_reduce` (same handedness).
    op : ndarray of shape (3, 3) of int
        The unimodular transformation, ``reduced = op @ cell`` (the identity
        when nothing was reduced).

    Examples
    --------
    >>> import numpy as np
    >>> from gapkit.electrostatics import reduce_cell
    >>> a = 5.64 * np.eye(3)
    >>> skewed = np.array([a[0], a[1] + 7 * a[0], a[2] + 5 * a[0] - 9 * a[1]])
    >>> reduced, op = reduce_cell(skewed)
    >>> np.round(np.linalg.norm(reduced, axis=1), 6).tolist()
    [5.64, 5.64, 5.64]
    >>> bool(np.allclose(op @ skewed, reduced))
    True
    """
    cell = np.asarray(cell, dtype=float)
    if is_reduced(cell):
        return cell, np.eye(3, dtype=int)
    reduced, op = minkowski_reduce(cell, pbc=True)
    return np.ascontiguousarray(np.asarray(reduced, dtype=float)), np.asarray(op, dtype=int)
