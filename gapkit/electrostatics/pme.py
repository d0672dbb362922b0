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

import numba as nb
import numpy as np
import scipy.fft

from .realspace import wrap_positions
from .splines import _fill_weights, bspline_moduli

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
def _influence(fq, recip, alpha, volume, bsq0, bsq1, bsq2, mesh_last,
               want_virial):  # pragma: no cover
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


def pme_reciprocal(positions, cell, charges, alpha, mesh, order, *, workers=None,
                   compute_virial=True):
    """Reciprocal-space Ewald energies, forces and strain derivative by SPME.

    Parameters
    ----------
    positions : ndarray of shape (n_atoms, 3)
        Cartesian positions in Å.
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å.
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    alpha : float
        Ewald splitting parameter in Å⁻¹.
    mesh : sequence of 3 int
        Mesh points K_a along each lattice vector (each ≥ ``order``).
    order : int
        Cardinal B-spline order p (4–8).
    workers : int, default=None
        Threads for the FFTs (``None``: all CPUs).
    compute_virial : bool, default=True
        Whether to compute the strain derivative (otherwise zeros).

    Returns
    -------
    energies : ndarray of shape (n_atoms,)
        ``½ q_i φ_i`` in e²/Å; they sum to E_rec.
    forces : ndarray of shape (n_atoms, 3)
        In e²/Å².
    virial : ndarray of shape (6,)
        ``∂E_rec/∂ε`` in e²/Å, Voigt order; the stress is ``virial / V``.
    """
    cell = np.asarray(cell, dtype=float)
    charges = np.ascontiguousarray(charges, dtype=float)
    mesh = np.asarray(mesh, dtype=np.int64)
    order = int(order)
    if workers is None:
        workers = os.cpu_count() or 1
    volume = abs(np.linalg.det(cell))
    recip = np.linalg.inv(cell).T
    frac, _ = wrap_positions(positions, cell)
    u = np.ascontiguousarray(frac * mesh)
    idx, wts, der = _spline_tables(u, mesh, order)
    n = len(charges)
    nchunks = max(1, min(nb.get_num_threads(), n // 2000))
    grid = _spread(charges, idx, wts, order, mesh, nchunks)
    fq = scipy.fft.rfftn(grid, workers=workers)
    bsq = [bspline_moduli(int(k), order) for k in mesh]
    energy, virial = _influence(fq, recip, float(alpha), volume, bsq[0], bsq[1],
                                bsq[2][: fq.shape[2]].copy(), int(mesh[2]),
                                bool(compute_virial))
    phi = scipy.fft.irfftn(fq, s=tuple(int(k) for k in mesh), workers=workers)
    phi *= float(np.prod(mesh))
    scale = np.ascontiguousarray(recip * mesh[:, None])
    pot, forces = _gather(phi, charges, idx, wts, der, order, scale)
    if not compute_virial:
        virial = np.zeros(6)
    return 0.5 * charges * pot, forces, virial
