"""Real-space (short-range) Ewald sum with cell lists for any periodic cell.

The neighbour search bins atoms by their *fractional* coordinates, so it is
exact for triclinic cells and for cells smaller than the cut-off (periodic
images are enumerated explicitly; no minimum-image convention is assumed).
It holds for any basis, but a very skewed one (long, nearly parallel vectors)
has thin slabs between lattice planes and a stencil that grows with the skew,
so :func:`real_space_sum` first replaces the cell by its Minkowski-reduced
basis (:mod:`gapkit.electrostatics._lattice`); the pairs and images found are
the same.

Notes
-----
Let d_a be the spacing of the lattice planes normal to reciprocal vector a*_a
(``d_a = 1/|a*_a|``). Along direction a the cell is cut into
``n_a = max(1, floor(ν d_a / r_c))`` bins (ν = 2 subdivisions per cut-off), of
perpendicular width ``w_a = d_a / n_a``. Two atoms closer than r_c differ by at
most ``s_a = ceil(r_c / w_a)`` bins along a, because the distance between two
points is at least the difference of their distances to any plane. Each atom
therefore scans the ``Π (2 s_a + 1)`` bins around its own; offsets that leave
the cell are folded back with the matching lattice translation, which also
enumerates the images of small cells. Atoms are sorted by bin, and the loop
runs over pairs of bins: each bin with itself (j > i) and with the bins at the
offsets of one half of the stencil (o > 0 lexicographically), since offset -o
gives the same pairs again. An atom meets its own periodic images there too.
Threads own interleaved bins and write into private force buffers that are
summed at the end.

The pair potential uses ``erfc(x) = exp(-x²) R(x)`` with R = erfcx tabulated
for cubic Hermite interpolation (relative error ~1e-14), so one exponential
serves both the energy and the force.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from scipy.special import erfcx

from .._fork_safe import fork_safe
from ._arrays import array_namespace, device_of, host, is_numpy, to_device
from ._lattice import reduce_cell

__all__ = ["wrap_positions", "real_space_sum", "pair_sum"]

#: Bins per cut-off length along each direction (2 scans 5³ bins of (r_c/2)³).
_SUBDIVISIONS = 2


def wrap_positions(positions, cell):
    """Fractional coordinates in [0, 1) and the matching wrapped Cartesian positions.

    Parameters
    ----------
    positions : array of shape (n_atoms, 3)
        Cartesian positions in Å, of any array namespace (NumPy, CuPy,
        ``array_api_strict``); the results are of the same namespace.
    cell : array of shape (3, 3)
        Lattice vectors as rows, in Å.

    Returns
    -------
    frac : array of shape (n_atoms, 3)
        Fractional coordinates, each in [0, 1).
    wrapped : array of shape (n_atoms, 3)
        ``frac @ cell``, the positions folded into the cell.
    """
    xp = array_namespace(positions)
    cell = host(cell)
    if is_numpy(xp):
        frac = np.asarray(positions, dtype=float) @ np.linalg.inv(cell)
        frac -= np.floor(frac)
        frac[frac >= 1.0] = 0.0  # rounding of values just below an integer
        return frac, frac @ cell
    positions = xp.asarray(positions, dtype=xp.float64)
    frac = positions @ to_device(xp, np.linalg.inv(cell), positions)
    frac = frac - xp.floor(frac)
    frac = xp.where(frac >= 1.0, xp.zeros_like(frac), frac)
    return frac, frac @ to_device(xp, cell, positions)


def _bin_atoms(frac, cell, cutoff):
    """Sort atoms into fractional bins; returns order, bins, bin starts, shape, ranges."""
    recip = np.linalg.inv(cell).T  # rows a*_a, without 2π
    spacing = 1.0 / np.linalg.norm(recip, axis=1)
    nbins = np.maximum(1, np.floor(np.minimum(_SUBDIVISIONS * spacing / cutoff, 2.0**40)))
    nbins = nbins.astype(np.int64)
    # Cap the number of bins so that sparse systems do not allocate huge arrays
    # (the product in floating point: a tiny cut-off must not overflow int64).
    while np.prod(nbins.astype(float)) > 8 * len(frac) + 64 and np.any(nbins > 1):
        nbins = np.maximum(1, nbins // 2)
    width = spacing / nbins
    srange = np.ceil(cutoff / width - 1e-12).astype(np.int64)
    ijk = np.minimum((frac * nbins).astype(np.int64), nbins - 1)
    flat = (ijk[:, 0] * nbins[1] + ijk[:, 1]) * nbins[2] + ijk[:, 2]
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=int(np.prod(nbins)))
    start = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    return order, np.ascontiguousarray(ijk[order]), start, nbins, srange


#: Nodes per unit of x = α r in the cubic Hermite table of erfc(x)·exp(x²).
_TABLE_DENSITY = 512


def _erfc_table(x_max):
    """Table of R(x) = erfc(x) exp(x²) and R'(x) = 2xR - 2/√π on a uniform grid.

    erfc(x) = exp(-x²) R(x), and R is smooth and slowly varying, so a cubic
    Hermite interpolant on 1/512 spacing reproduces erfc to ~1e-14 relative
    while the exponential is shared with the force.
    """
    n = int(math.ceil(x_max * _TABLE_DENSITY)) + 3
    x = np.arange(n) / _TABLE_DENSITY
    r = erfcx(x)
    dr = 2.0 * x * r - 2.0 / math.sqrt(math.pi)
    return np.ascontiguousarray(np.stack([r, dr], axis=1))


@nb.njit(cache=True, inline="always", error_model="numpy", fastmath=True)
def _erfcx_lookup(x, table):  # pragma: no cover
    t = x * _TABLE_DENSITY
    k = int(t)
    s = t - k
    h = 1.0 / _TABLE_DENSITY
    y0 = table[k, 0]
    y1 = table[k + 1, 0]
    d0 = table[k, 1] * h
    d1 = table[k + 1, 1] * h
    s2 = s * s
    s3 = s2 * s
    return (
        (2.0 * s3 - 3.0 * s2 + 1.0) * y0
        + (s3 - 2.0 * s2 + s) * d0
        + (-2.0 * s3 + 3.0 * s2) * y1
        + (s3 - s2) * d1
    )


def _half_stencil(nbins, srange):
    """Bin offsets o with o > 0 (lexicographically), plus wrap tables per axis.

    Pairs between bin A and bin A+o (with its lattice shift) are the pairs between
    A+o and A with the opposite shift, so half of the stencil visits each pair once.
    """
    grids = np.meshgrid(*(np.arange(-s, s + 1) for s in srange), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    positive = (
        (offsets[:, 0] > 0)
        | ((offsets[:, 0] == 0) & (offsets[:, 1] > 0))
        | ((offsets[:, 0] == 0) & (offsets[:, 1] == 0) & (offsets[:, 2] > 0))
    )
    offsets = np.ascontiguousarray(offsets[positive])
    width = int(np.max(nbins + 2 * srange))
    wrap = np.zeros((3, width), dtype=np.int64)
    image = np.zeros((3, width), dtype=np.int64)
    for axis in range(3):
        k = np.arange(nbins[axis] + 2 * srange[axis]) - srange[axis]  # b + o
        wrap[axis, : len(k)] = np.mod(k, nbins[axis])
        image[axis, : len(k)] = np.floor_divide(k, nbins[axis])
    return offsets, wrap, image


@nb.njit(parallel=True, cache=True, error_model="numpy", fastmath=True)
def _real_space_kernel(
    xs, qs, start, nbins, srange, offsets, wrap, image, cell, alpha, cutoff, table, nthreads
):  # pragma: no cover
    """Loop over pairs of bins (self bin with j > i, then the half stencil)."""
    n = xs.shape[0]
    energies = np.zeros((nthreads, n))
    forces = np.zeros((nthreads, n, 3))
    virial = np.zeros((nthreads, 6))
    rc2 = cutoff * cutoff
    a2 = alpha * alpha
    c = 2.0 * alpha / math.sqrt(math.pi)
    m0, m1, m2 = nbins[0], nbins[1], nbins[2]
    s0, s1, s2 = srange[0], srange[1], srange[2]
    n_bins = m0 * m1 * m2
    n_off = offsets.shape[0]
    for tid in nb.prange(nthreads):
        v0 = 0.0
        v1 = 0.0
        v2 = 0.0
        v3 = 0.0
        v4 = 0.0
        v5 = 0.0
        for bin_a in range(tid, n_bins, nthreads):
            lo_a = start[bin_a]
            hi_a = start[bin_a + 1]
            if lo_a == hi_a:
                continue
            a0 = bin_a // (m1 * m2)
            a1 = (bin_a // m2) % m1
            a2i = bin_a % m2
            for k in range(-1, n_off):
                if k < 0:  # the bin itself, no shift
                    bin_b = bin_a
                    t0 = 0.0
                    t1 = 0.0
                    t2 = 0.0
                else:
                    k0 = a0 + offsets[k, 0] + s0
                    k1 = a1 + offsets[k, 1] + s1
                    k2 = a2i + offsets[k, 2] + s2
                    bin_b = (wrap[0, k0] * m1 + wrap[1, k1]) * m2 + wrap[2, k2]
                    n0 = image[0, k0]
                    n1 = image[1, k1]
                    n2 = image[2, k2]
                    t0 = n0 * cell[0, 0] + n1 * cell[1, 0] + n2 * cell[2, 0]
                    t1 = n0 * cell[0, 1] + n1 * cell[1, 1] + n2 * cell[2, 1]
                    t2 = n0 * cell[0, 2] + n1 * cell[1, 2] + n2 * cell[2, 2]
                lo_b = start[bin_b]
                hi_b = start[bin_b + 1]
                for i in range(lo_a, hi_a):
                    xi0 = xs[i, 0] - t0
                    xi1 = xs[i, 1] - t1
                    xi2 = xs[i, 2] - t2
                    qi = qs[i]
                    e = 0.0
                    f0 = 0.0
                    f1 = 0.0
                    f2 = 0.0
                    j0 = i + 1 if k < 0 else lo_b
                    for j in range(j0, hi_b):
                        d0 = xs[j, 0] - xi0
                        d1 = xs[j, 1] - xi1
                        d2 = xs[j, 2] - xi2
                        r2 = d0 * d0 + d1 * d1 + d2 * d2
                        if r2 >= rc2:
                            continue
                        r = math.sqrt(r2)
                        ex = math.exp(-a2 * r2)
                        phi = ex * _erfcx_lookup(alpha * r, table) / r
                        qq = qi * qs[j]
                        g = -qq * (phi + c * ex) / r2  # q_i q_j φ'(r)/r
                        half = 0.5 * qq * phi
                        e += half
                        energies[tid, j] += half
                        forces[tid, j, 0] -= g * d0
                        forces[tid, j, 1] -= g * d1
                        forces[tid, j, 2] -= g * d2
                        f0 += g * d0
                        f1 += g * d1
                        f2 += g * d2
                        v0 += g * d0 * d0
                        v1 += g * d1 * d1
                        v2 += g * d2 * d2
                        v3 += g * d1 * d2
                        v4 += g * d0 * d2
                        v5 += g * d0 * d1
                    energies[tid, i] += e
                    forces[tid, i, 0] += f0
                    forces[tid, i, 1] += f1
                    forces[tid, i, 2] += f2
        virial[tid, 0] = v0
        virial[tid, 1] = v1
        virial[tid, 2] = v2
        virial[tid, 3] = v3
        virial[tid, 4] = v4
        virial[tid, 5] = v5
    return energies, forces, virial


def real_space_sum(positions, cell, charges, alpha, cutoff):
    """Short-range Ewald energies, forces and strain derivative.

    Parameters
    ----------
    positions : ndarray of shape (n_atoms, 3)
        Cartesian positions in Å (need not be wrapped).
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å; periodic in all three directions. Any
        basis of the lattice: a skewed one is Minkowski-reduced first
        (:func:`gapkit.electrostatics.reduce_cell`), which changes the bins,
        not the result.
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    alpha : float
        Ewald splitting parameter in Å⁻¹.
    cutoff : float
        Real-space cut-off r_c in Å; any size relative to the cell.

    Returns
    -------
    energies : ndarray of shape (n_atoms,)
        ``½ q_i Σ_{j,n}' q_j erfc(α r)/r`` in e²/Å.
    forces : ndarray of shape (n_atoms, 3)
        ``q_i Σ_{j,n}' q_j φ'(r) r_ij/r`` in e²/Å², with ``r_ij = r_j + n - r_i``.
    virial : ndarray of shape (6,)
        Strain derivative ``∂E/∂ε_ab = ½ Σ' q_i q_j φ'(r) r_a r_b / r`` in e²/Å,
        Voigt order (xx, yy, zz, yz, xz, xy); the stress is ``virial / V``.
    """
    cell = np.ascontiguousarray(reduce_cell(np.asarray(cell, dtype=float))[0])
    charges = np.asarray(charges, dtype=float)
    n = len(charges)
    if n == 0:
        return np.zeros(0), np.zeros((0, 3)), np.zeros(6)
    frac, wrapped = wrap_positions(positions, cell)
    order, _, start, nbins, srange = _bin_atoms(frac, cell, cutoff)
    offsets, wrap, image = _half_stencil(nbins, srange)
    xs = np.ascontiguousarray(wrapped[order])
    qs = np.ascontiguousarray(charges[order])
    table = _erfc_table(alpha * cutoff)
    nthreads = max(1, min(nb.get_num_threads(), n // 64))
    e_s, f_s, v_s = fork_safe(_real_space_kernel)(
        xs,
        qs,
        start,
        nbins,
        srange,
        offsets,
        wrap,
        image,
        cell,
        float(alpha),
        float(cutoff),
        table,
        nthreads,
    )
    energies = np.empty(n)
    energies[order] = e_s.sum(axis=0)
    forces = np.empty((n, 3))
    forces[order] = f_s.sum(axis=0)
    return energies, forces, v_s.sum(axis=0)


@nb.njit(parallel=True, cache=True)
def _pair_kernel(x, q):  # pragma: no cover
    n = x.shape[0]
    energies = np.zeros(n)
    forces = np.zeros((n, 3))
    for i in nb.prange(n):
        e = 0.0
        f0 = 0.0
        f1 = 0.0
        f2 = 0.0
        for j in range(n):
            if j == i:
                continue
            d0 = x[j, 0] - x[i, 0]
            d1 = x[j, 1] - x[i, 1]
            d2 = x[j, 2] - x[i, 2]
            r2 = d0 * d0 + d1 * d1 + d2 * d2
            r = math.sqrt(r2)
            e += q[j] / r
            g = -q[j] / (r2 * r)
            f0 += g * d0
            f1 += g * d1
            f2 += g * d2
        energies[i] = 0.5 * q[i] * e
        forces[i, 0] = q[i] * f0
        forces[i, 1] = q[i] * f1
        forces[i, 2] = q[i] * f2
    return energies, forces


#: Largest number of pair distances held at once by the array-API pair sum.
_PAIR_CHUNK_ELEMENTS = 4_000_000


def pair_sum(positions, charges):
    """Plain Coulomb sum over all pairs of a finite (non-periodic) system.

    Parameters
    ----------
    positions : array of shape (n_atoms, 3)
        Cartesian positions in Å. NumPy arrays use a numba kernel; arrays of
        any other namespace (CuPy, ``array_api_strict``) a dense array-API
        formulation in blocks of rows, with results of the same namespace.
    charges : array of shape (n_atoms,)
        Charges in e.

    Returns
    -------
    energies : array of shape (n_atoms,)
        ``½ q_i Σ_{j≠i} q_j / r_ij`` in e²/Å.
    forces : array of shape (n_atoms, 3)
        ``-q_i Σ_{j≠i} q_j (r_j - r_i) / r_ij³`` in e²/Å².
    """
    xp = array_namespace(positions, charges)
    if not is_numpy(xp):
        return _pair_sum_xp(
            xp, xp.asarray(positions, dtype=xp.float64), xp.asarray(charges, dtype=xp.float64)
        )
    x = np.ascontiguousarray(positions, dtype=float)
    q = np.ascontiguousarray(charges, dtype=float)
    if len(q) == 0:
        return np.zeros(0), np.zeros((0, 3))
    return fork_safe(_pair_kernel)(x, q)


def _pair_sum_xp(xp: Any, x: Any, q: Any) -> tuple[Any, Any]:
    """:func:`pair_sum` in array-API operations, ``chunk`` rows of the pair matrix at a time."""
    n = q.shape[0]
    dev = device_of(q)
    if n == 0:
        return xp.zeros(0, dtype=xp.float64, device=dev), xp.zeros(
            (0, 3), dtype=xp.float64, device=dev
        )
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // (3 * n))
    cols = xp.arange(n, device=dev)
    energies, forces = [], []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        d = x[None, :, :] - x[lo:hi, None, :]  # d[i, j] = r_j - r_i
        r2 = xp.sum(d * d, axis=2)
        own = xp.arange(lo, hi, device=dev)[:, None] == cols[None, :]
        r2 = xp.where(own, xp.ones_like(r2), r2)
        r = xp.sqrt(r2)
        zero = xp.zeros_like(r2)
        e = xp.sum(xp.where(own, zero, q[None, :] / r), axis=1)
        g = xp.where(own, zero, -q[None, :] / (r2 * r))
        f = xp.sum(g[:, :, None] * d, axis=1)
        qi = q[lo:hi]
        energies.append(0.5 * qi * e)
        forces.append(qi[:, None] * f)
    return xp.concat(energies), xp.concat(forces, axis=0)
