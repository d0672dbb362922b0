"""Smooth particle-mesh Ewald (SPME): the reciprocal-space sum on a mesh.

Notes
-----
Following Essmann et al. (1995), with reciprocal vectors a*_a (rows of
``inv(cell).T``, no 2π) and mesh sizes K_a, each atom gets scaled coordinates
``u_a = K_a a*_a · r``. Its charge is spread on the mesh with cardinal
B-splines of order p,

.. math::

    Q(\\mathbf k) = \\sum_i q_i \\prod_a M_p(u_{ia} - k_a - n_a K_a),

and the reciprocal energy is

.. math::

    E_{rec} = \\frac12 \\sum_{\\mathbf m \\neq 0} G(\\mathbf m)\\,|\\hat Q(\\mathbf m)|^2,
    \\qquad
    G(\\mathbf m) = \\frac{\\exp(-\\pi^2 m^2/\\alpha^2)}{\\pi V m^2}
                   \\prod_a |b_a(m_a)|^2,

where Q̂ is the discrete Fourier transform of Q and ``|b|²`` are the spline moduli
(:func:`gapkit.electrostatics.splines.bspline_moduli`). With the convolved mesh
``φ = K₁K₂K₃ · IFFT(G · Q̂)``, atom i has the potential
``φ_i = Σ_k W_i(k) φ(k)``, per-atom energy ``½ q_i φ_i`` and force
``F_i = -q_i Σ_k ∇_{r_i} W_i(k) φ(k)`` (analytical differentiation of the
spline weights). The strain derivative is

.. math::

    \\frac{\\partial E_{rec}}{\\partial \\varepsilon_{ab}} = -\\sum_{\\mathbf m\\neq0}
    E(\\mathbf m)\\Bigl[\\delta_{ab} - 2\\Bigl(1 + \\frac{\\pi^2 m^2}{\\alpha^2}\\Bigr)
    \\frac{m_a m_b}{m^2}\\Bigr],\\qquad E(\\mathbf m) = \\tfrac12 G|\\hat Q|^2.

Real-to-complex FFTs are used; the half spectrum is weighted by 2 except on
the planes m₃ = 0 and m₃ = K₃/2.

References
----------
U. Essmann, L. Perera, M. L. Berkowitz, T. Darden, H. Lee and L. G. Pedersen,
"A smooth particle mesh Ewald method", J. Chem. Phys. 103, 8577 (1995).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numba as nb
import numpy as np
import scipy.fft

from .._fork_safe import fork_safe
from ..backend import index_add
from ._arrays import array_namespace, device_of, host, is_cupy, is_numpy, to_device
from .realspace import wrap_positions
from .splines import _fill_weights, bspline_moduli, bspline_weights_xp

__all__ = ["pme_reciprocal"]


@nb.njit(parallel=True, cache=True)
def _spline_tables(u, mesh, order):  # pragma: no cover
    """Grid indices, weights and derivatives of every atom along each axis."""
    n = u.shape[0]
    idx = np.empty((3, n, order), dtype=np.int64)
    wts = np.empty((3, n, order))
    der = np.empty((3, n, order))
    for i in nb.prange(n):
        for a in range(3):
            k = mesh[a]
            ui = u[i, a]
            base = int(math.floor(ui))
            _fill_weights(ui - base, order, wts[a, i], der[a, i])
            for j in range(order):
                idx[a, i, j] = (base - j) % k
    return idx, wts, der


@nb.njit(cache=True)
def _spread_range(q, idx, wts, order, grid, lo, hi):  # pragma: no cover
    for i in range(lo, hi):
        qi = q[i]
        for a in range(order):
            ia = idx[0, i, a]
            wa = qi * wts[0, i, a]
            for b in range(order):
                ib = idx[1, i, b]
                wab = wa * wts[1, i, b]
                for c in range(order):
                    grid[ia, ib, idx[2, i, c]] += wab * wts[2, i, c]


@nb.njit(parallel=True, cache=True)
def _spread(q, idx, wts, order, mesh, nchunks):  # pragma: no cover
    """Charge mesh; atoms are split in chunks spread into private grids, then summed."""
    n = q.shape[0]
    grids = np.zeros((nchunks, mesh[0], mesh[1], mesh[2]))
    for t in nb.prange(nchunks):
        lo = t * n // nchunks
        hi = (t + 1) * n // nchunks
        _spread_range(q, idx, wts, order, grids[t], lo, hi)
    if nchunks == 1:
        return grids[0]
    out = grids[0]
    for i in nb.prange(mesh[0]):
        for t in range(1, nchunks):
            out[i] += grids[t, i]
    return out


@nb.njit(parallel=True, cache=True)
def _influence(
    fq, recip, alpha, volume, bsq0, bsq1, bsq2, mesh_last, want_virial
):  # pragma: no cover
    """Multiply Q̂ in place by G(m); return the energy and the strain derivative."""
    k0, k1, k2h = fq.shape
    pi2a2 = math.pi * math.pi / (alpha * alpha)
    pref = 1.0 / (math.pi * volume)
    energy = 0.0
    w0 = 0.0
    w1 = 0.0
    w2 = 0.0
    w3 = 0.0
    w4 = 0.0
    w5 = 0.0
    for i0 in nb.prange(k0):
        m0 = i0 if 2 * i0 <= k0 else i0 - k0
        for i1 in range(k1):
            m1 = i1 if 2 * i1 <= k1 else i1 - k1
            b01 = bsq0[i0] * bsq1[i1]
            for i2 in range(k2h):
                m2 = i2
                mx = m0 * recip[0, 0] + m1 * recip[1, 0] + m2 * recip[2, 0]
                my = m0 * recip[0, 1] + m1 * recip[1, 1] + m2 * recip[2, 1]
                mz = m0 * recip[0, 2] + m1 * recip[1, 2] + m2 * recip[2, 2]
                msq = mx * mx + my * my + mz * mz
                if msq == 0.0:
                    fq[i0, i1, i2] = 0.0
                    continue
                g = pref * math.exp(-pi2a2 * msq) / msq * b01 * bsq2[i2]
                z = fq[i0, i1, i2]
                weight = 1.0 if (i2 == 0 or 2 * i2 == mesh_last) else 2.0
                em = 0.5 * weight * g * (z.real * z.real + z.imag * z.imag)
                energy += em
                if want_virial:
                    s = 2.0 * em * (1.0 + pi2a2 * msq) / msq
                    w0 += s * mx * mx
                    w1 += s * my * my
                    w2 += s * mz * mz
                    w3 += s * my * mz
                    w4 += s * mx * mz
                    w5 += s * mx * my
                fq[i0, i1, i2] = z * g
    virial = np.empty(6)
    virial[0] = w0 - energy
    virial[1] = w1 - energy
    virial[2] = w2 - energy
    virial[3] = w3
    virial[4] = w4
    virial[5] = w5
    return energy, virial


@nb.njit(parallel=True, cache=True)
def _gather(phi, q, idx, wts, der, order, scale):  # pragma: no cover
    """Per-atom potential and force from the convolved mesh.

    ``scale`` holds K_a a*_a as rows: ∂u_a/∂r.
    """
    n = q.shape[0]
    pot = np.empty(n)
    forces = np.empty((n, 3))
    for i in nb.prange(n):
        p = 0.0
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        for a in range(order):
            ia = idx[0, i, a]
            wa = wts[0, i, a]
            da = der[0, i, a]
            for b in range(order):
                ib = idx[1, i, b]
                wb = wts[1, i, b]
                db = der[1, i, b]
                s = 0.0
                s2 = 0.0
                for c in range(order):
                    v = phi[ia, ib, idx[2, i, c]]
                    s += wts[2, i, c] * v
                    s2 += der[2, i, c] * v
                p += wa * wb * s
                g0 += da * wb * s
                g1 += wa * db * s
                g2 += wa * wb * s2
        pot[i] = p
        qi = q[i]
        for x in range(3):
            forces[i, x] = -qi * (g0 * scale[0, x] + g1 * scale[1, x] + g2 * scale[2, x])
    return pot, forces


def pme_reciprocal(
    positions, cell, charges, alpha, mesh, order, *, workers=None, compute_virial=True
):
    """Reciprocal-space Ewald energies, forces and strain derivative by SPME.

    Written against the array API: ``positions`` and ``charges`` may be NumPy,
    CuPy or ``array_api_strict`` arrays (the same namespace for both), and the
    results are arrays of that namespace on the same device. NumPy spreads
    and gathers with numba kernels and transforms with :mod:`scipy.fft`; CuPy
    with CUDA kernels (:mod:`gapkit.electrostatics._cuda`) and ``cupy.fft``;
    any other namespace with :func:`gapkit.backend.index_add` and ``take``
    on dense (atom, p³) index arrays (meant for tests on small meshes).

    Parameters
    ----------
    positions : array of shape (n_atoms, 3)
        Cartesian positions in Å.
    cell : array of shape (3, 3)
        Lattice vectors as rows in Å (any namespace; read on the host).
    charges : array of shape (n_atoms,)
        Charges in e.
    alpha : float
        Ewald splitting parameter in Å⁻¹.
    mesh : sequence of 3 int
        Mesh points K_a along each lattice vector (each ≥ ``order``).
    order : int
        Cardinal B-spline order p (4–8).
    workers : int, default=None
        Threads for the FFTs on NumPy (``None``: all CPUs); ignored elsewhere.
    compute_virial : bool, default=True
        Whether to compute the strain derivative (otherwise zeros).

    Returns
    -------
    energies : array of shape (n_atoms,)
        ``½ q_i φ_i`` in e²/Å; they sum to E_rec.
    forces : array of shape (n_atoms, 3)
        In e²/Å².
    virial : array of shape (6,)
        ``∂E_rec/∂ε`` in e²/Å, Voigt order; the stress is ``virial / V``.
    """
    xp = array_namespace(positions, charges)
    if not is_numpy(xp):
        return _pme_reciprocal_xp(xp, positions, cell, charges, alpha, mesh, order, compute_virial)
    cell = host(cell)
    charges = np.ascontiguousarray(charges, dtype=float)
    mesh = np.asarray(mesh, dtype=np.int64)
    order = int(order)
    if workers is None:
        workers = os.cpu_count() or 1
    volume = abs(np.linalg.det(cell))
    recip = np.linalg.inv(cell).T
    frac, _ = wrap_positions(positions, cell)
    u = np.ascontiguousarray(frac * mesh)
    idx, wts, der = fork_safe(_spline_tables)(u, mesh, order)
    n = len(charges)
    nchunks = max(1, min(nb.get_num_threads(), n // 2000))
    grid = fork_safe(_spread)(charges, idx, wts, order, mesh, nchunks)
    fq = scipy.fft.rfftn(grid, workers=workers)
    bsq = [bspline_moduli(int(k), order) for k in mesh]
    energy, virial = fork_safe(_influence)(
        fq,
        recip,
        float(alpha),
        volume,
        bsq[0],
        bsq[1],
        bsq[2][: fq.shape[2]].copy(),
        int(mesh[2]),
        bool(compute_virial),
    )
    phi = scipy.fft.irfftn(fq, s=tuple(int(k) for k in mesh), workers=workers)
    phi *= float(np.prod(mesh))
    scale = np.ascontiguousarray(recip * mesh[:, None])
    pot, forces = fork_safe(_gather)(phi, charges, idx, wts, der, order, scale)
    if not compute_virial:
        virial = np.zeros(6)
    return 0.5 * charges * pot, forces, virial


# ------------------------------------------------------------ any array namespace


def _spline_tables_xp(
    xp: Any, frac: Any, mesh: tuple[int, int, int], order: int
) -> tuple[list, list, list]:
    """Grid indices, weights and derivatives: three lists of 3 arrays of shape (n, order).

    The array-API counterpart of :func:`_spline_tables` (same formulas); item a
    of each list belongs to mesh axis a.
    """
    tables_idx, tables_w, tables_d = [], [], []
    dev = device_of(frac)
    shift = xp.arange(order, dtype=xp.int64, device=dev)
    for a in range(3):
        u = frac[:, a] * float(mesh[a])
        base = xp.floor(u)
        w, d = bspline_weights_xp(xp, u - base, order)
        tables_idx.append((xp.astype(base, xp.int64)[:, None] - shift[None, :]) % mesh[a])
        tables_w.append(w)
        tables_d.append(d)
    return tables_idx, tables_w, tables_d


def _influence_xp(
    xp: Any,
    fq: Any,
    recip: np.ndarray,
    alpha: float,
    volume: float,
    mesh: tuple[int, int, int],
    order: int,
    want_virial: bool,
) -> tuple[Any, Any]:
    """Array-API counterpart of :func:`_influence`: returns ``G·Q̂`` and the strain derivative.

    Everything that depends on one mesh axis only (the integer frequencies
    times the reciprocal vectors, the spline moduli, the half-spectrum weights)
    is computed on the host; the mesh-sized work runs in ``xp``.
    """
    k0, k1, k2 = (int(k) for k in mesh)
    k2h = fq.shape[2]
    pi2a2 = math.pi * math.pi / (alpha * alpha)
    pref = 1.0 / (math.pi * volume)
    freq = []
    for k in (k0, k1, k2):
        i = np.arange(k)
        freq.append(np.where(2 * i <= k, i, i - k).astype(float))
    freq[2] = freq[2][:k2h]
    bsq = [bspline_moduli(k, order) for k in (k0, k1, k2)]
    b01 = to_device(xp, bsq[0][:, None] * bsq[1][None, :], fq)
    b2 = to_device(xp, bsq[2][:k2h], fq)
    weight = np.full(k2h, 2.0)
    weight[0] = 1.0
    if 2 * (k2h - 1) == k2:
        weight[k2h - 1] = 1.0
    half_weight = to_device(xp, 0.5 * weight, fq)
    comps = []
    for x in range(3):
        c0 = to_device(xp, freq[0] * recip[0, x], fq)
        c1 = to_device(xp, freq[1] * recip[1, x], fq)
        c2 = to_device(xp, freq[2] * recip[2, x], fq)
        comps.append(c0[:, None, None] + c1[None, :, None] + c2[None, None, :])
    mx, my, mz = comps
    msq = mx * mx + my * my + mz * mz
    origin = msq == 0.0
    safe = xp.where(origin, xp.ones_like(msq), msq)
    g = pref * xp.exp(-pi2a2 * msq) / safe * b01[:, :, None] * b2[None, None, :]
    g = xp.where(origin, xp.zeros_like(g), g)
    dev = device_of(fq)
    if want_virial:
        em = half_weight[None, None, :] * g * (xp.real(fq) ** 2 + xp.imag(fq) ** 2)
        energy = xp.sum(em)
        s = 2.0 * em * (1.0 + pi2a2 * msq) / safe
        virial = xp.stack(
            [
                xp.sum(s * mx * mx) - energy,
                xp.sum(s * my * my) - energy,
                xp.sum(s * mz * mz) - energy,
                xp.sum(s * my * mz),
                xp.sum(s * mx * mz),
                xp.sum(s * mx * my),
            ]
        )
    else:
        virial = xp.zeros(6, dtype=xp.float64, device=dev)
    return fq * g, virial


def _pme_reciprocal_xp(
    xp: Any,
    positions: Any,
    cell: Any,
    charges: Any,
    alpha: float,
    mesh: Sequence[int],
    order: int,
    compute_virial: bool,
) -> tuple:
    """:func:`pme_reciprocal` for a namespace other than NumPy."""
    positions = xp.asarray(positions, dtype=xp.float64)
    charges = xp.asarray(charges, dtype=xp.float64)
    cell = host(cell)
    mesh = tuple(int(k) for k in mesh)
    order = int(order)
    dev = device_of(charges)
    n = charges.shape[0]
    if n == 0:
        return (
            xp.zeros(0, dtype=xp.float64, device=dev),
            xp.zeros((0, 3), dtype=xp.float64, device=dev),
            xp.zeros(6, dtype=xp.float64, device=dev),
        )
    volume = float(abs(np.linalg.det(cell)))  # Python floats: NumPy scalars would
    recip = np.linalg.inv(cell).T  # turn other namespaces' arrays into NumPy arrays
    frac, _ = wrap_positions(positions, cell)
    idx, wts, der = _spline_tables_xp(xp, frac, mesh, order)
    if is_cupy(xp):
        from . import _cuda

        tables = [xp.stack(t) for t in (idx, wts, der)]  # (3, n, p), C-contiguous
        grid = _cuda.spread(charges, tables[0], tables[1], mesh)
    else:
        flat = xp.reshape(_flat_indices(xp, idx, mesh), (-1,))
        values = (
            charges[:, None, None, None]
            * wts[0][:, :, None, None]
            * wts[1][:, None, :, None]
            * wts[2][:, None, None, :]
        )
        grid = index_add(xp, flat, xp.reshape(values, (-1,)), math.prod(mesh))
        grid = xp.reshape(grid, mesh)
    fq = xp.fft.rfftn(grid, axes=(0, 1, 2))
    fq, virial = _influence_xp(
        xp, fq, recip, float(alpha), volume, mesh, order, bool(compute_virial)
    )
    phi = xp.fft.irfftn(fq, s=mesh, axes=(0, 1, 2)) * float(math.prod(mesh))
    if is_cupy(xp):
        pot, grad = _cuda.gather(phi, *tables, mesh)
        g0, g1, g2 = grad[:, 0], grad[:, 1], grad[:, 2]
    else:
        v = xp.reshape(xp.take(xp.reshape(phi, (-1,)), flat), (n, order, order, order))
        s = xp.sum(wts[2][:, None, None, :] * v, axis=3)
        s2 = xp.sum(der[2][:, None, None, :] * v, axis=3)
        w0, d0 = wts[0][:, :, None], der[0][:, :, None]
        w1, d1 = wts[1][:, None, :], der[1][:, None, :]
        pot = xp.sum(w0 * w1 * s, axis=(1, 2))
        g0 = xp.sum(d0 * w1 * s, axis=(1, 2))
        g1 = xp.sum(w0 * d1 * s, axis=(1, 2))
        g2 = xp.sum(w0 * w1 * s2, axis=(1, 2))
    scale = recip * np.asarray(mesh, dtype=float)[:, None]  # rows ∂u_a/∂r
    scale = scale.tolist()
    cols = [g0 * scale[0][x] + g1 * scale[1][x] + g2 * scale[2][x] for x in range(3)]
    forces = -charges[:, None] * xp.stack(cols, axis=1)
    return 0.5 * charges * pot, forces, virial


def _flat_indices(xp: Any, idx: list, mesh: tuple[int, int, int]) -> Any:
    """Flat mesh index of every (atom, a, b, c) spline point, shape (n, p, p, p).

    ``idx`` holds the three per-axis index arrays of shape (n, p).
    """
    k1, k2 = mesh[1], mesh[2]
    return (idx[0][:, :, None, None] * k1 + idx[1][:, None, :, None]) * k2 + idx[2][
        :, None, None, :
    ]
