"""The neighbour list (vesin) agrees with ASE's on awkward cells."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from gapkit.neighbours import neighbour_pairs


def _cases():
    small = bulk("Cu")  # primitive cell much smaller than the cutoff
    tri = bulk("Si") * (2, 1, 1)
    tri.rattle(0.1, seed=0)
    outside = bulk("Cu", cubic=True)
    outside.positions += [7.3, -11.0, 3.1]  # atoms far outside the cell
    slab = bulk("Cu", cubic=True).repeat((2, 2, 1))
    slab.pbc = (True, True, False)
    slab.center(vacuum=4.0, axis=2)
    return [small, tri, outside, slab, molecule("CH3OH")]


def _key(i, j, s, d):
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    return i[order], j[order], s[order], d[order]


@pytest.mark.parametrize("atoms", _cases(), ids=["prim", "tri", "outside", "slab", "mol"])
@pytest.mark.parametrize("cutoff", [0.3, 2.6, 8.0])
def test_same_pairs_as_ase(atoms, cutoff):
    i, j, d, s = neighbour_pairs(atoms, cutoff)
    assert np.all(np.diff(i) >= 0)
    ref = neighbor_list("ijDS", atoms, cutoff, self_interaction=False)
    ours = _key(i, j, s, d)
    theirs = _key(ref[0], ref[1], ref[3], ref[2])
    for a, b in zip(ours[:3], theirs[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours[3], theirs[3], atol=1e-10)
    np.testing.assert_allclose(
        ours[3],
        atoms.positions[ours[1]] + ours[2] @ atoms.cell.array - atoms.positions[ours[0]],
        atol=1e-10,
    )


@pytest.mark.parametrize("k, m", [(7, 5), (1000, 777)])
def test_skewed_basis_gives_the_same_pairs_quickly(k, m):
    """A strongly skewed basis of the same lattice (a2 + 1000 a1, ...) used to make
    the cell-list search take minutes; the pairs, vectors and shifts (in the given
    basis) are those of the reduced description."""
    import time

    from ase.build import bulk

    cube = bulk("Cu", "fcc", a=3.6, cubic=True)
    cube.rattle(0.05, seed=1)
    c = cube.cell.array
    skew = cube.copy()
    skew.set_cell([c[0], c[1] + k * c[0], c[2] - m * c[1]], scale_atoms=False)
    t0 = time.perf_counter()
    i, j, vec, shift = neighbour_pairs(skew, 4.5)
    assert time.perf_counter() - t0 < 5.0
    i0, j0, vec0, _ = neighbour_pairs(cube, 4.5)

    def key(i, j, v):
        return sorted(zip(i.tolist(), j.tolist(), np.round(v, 8).tolist(), strict=True))

    assert key(i, j, vec) == key(i0, j0, vec0)
    np.testing.assert_allclose(
        skew.positions[j] + shift @ skew.cell.array - skew.positions[i], vec, atol=1e-8
    )
