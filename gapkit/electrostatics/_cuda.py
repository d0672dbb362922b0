"""CUDA kernels (through CuPy) for SPME charge spreading and force gathering.

Both kernels take the spline tables of :func:`gapkit.electrostatics.pme._spline_tables_xp`:
``idx`` (int64), ``wts`` and ``der`` (float64), each C-contiguous of shape
``(3, n, p)``, row ``a`` holding the mesh indices, B-spline weights and their
derivatives of every atom along axis a. The mesh is a C-contiguous float64
array of shape ``(K0, K1, K2)``. They are one thread per atom:

* ``spme_spread`` adds ``q_i W0[a] W1[b] W2[c]`` to the p³ mesh points of atom
  i with ``atomicAdd`` on doubles (compute capability ≥ 6.0);
* ``spme_gather`` reads the same p³ points of the convolved mesh and writes the
  potential ``Σ W0 W1 W2 φ`` and the gradient with respect to the scaled
  coordinates, ``(Σ W0' W1 W2 φ, Σ W0 W1' W2 φ, Σ W0 W1 W2' φ)``.

The loops follow the numba kernels ``_spread_range`` and ``_gather`` of
:mod:`gapkit.electrostatics.pme` line for line; only the order in which the
atomic additions land differs (so results agree to round-off, not bitwise).

This module imports CuPy; import it only when the arrays are CuPy arrays.
"""

from __future__ import annotations

import functools

import cupy
import numpy as np

__all__ = ["spread", "gather"]

_SOURCE = r"""
extern "C" __global__ void spme_spread(
        const double* __restrict__ q, const long long* __restrict__ idx,
        const double* __restrict__ wts, const long long n, const int p,
        const long long k1, const long long k2, double* __restrict__ grid) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long o0 = i * p;
    const long long o1 = (n + i) * p;
    const long long o2 = (2 * n + i) * p;
    const double qi = q[i];
    for (int a = 0; a < p; ++a) {
        const double wa = qi * wts[o0 + a];
        const long long ia = idx[o0 + a];
        for (int b = 0; b < p; ++b) {
            const double wab = wa * wts[o1 + b];
            const long long row = (ia * k1 + idx[o1 + b]) * k2;
            for (int c = 0; c < p; ++c) {
                atomicAdd(&grid[row + idx[o2 + c]], wab * wts[o2 + c]);
            }
        }
    }
}

extern "C" __global__ void spme_gather(
        const double* __restrict__ phi, const long long* __restrict__ idx,
        const double* __restrict__ wts, const double* __restrict__ der,
        const long long n, const int p, const long long k1, const long long k2,
        double* __restrict__ pot, double* __restrict__ grad) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long o0 = i * p;
    const long long o1 = (n + i) * p;
    const long long o2 = (2 * n + i) * p;
    double acc = 0.0, g0 = 0.0, g1 = 0.0, g2 = 0.0;
    for (int a = 0; a < p; ++a) {
        const long long ia = idx[o0 + a];
        const double wa = wts[o0 + a];
        const double da = der[o0 + a];
        for (int b = 0; b < p; ++b) {
            const long long row = (ia * k1 + idx[o1 + b]) * k2;
            const double wb = wts[o1 + b];
            const double db = der[o1 + b];
            double s = 0.0, s2 = 0.0;
            for (int c = 0; c < p; ++c) {
                const double v = phi[row + idx[o2 + c]];
                s += wts[o2 + c] * v;
                s2 += der[o2 + c] * v;
            }
            acc += wa * wb * s;
            g0 += da * wb * s;
            g1 += wa * db * s;
            g2 += wa * wb * s2;
        }
    }
    pot[i] = acc;
    grad[3 * i] = g0;
    grad[3 * i + 1] = g1;
    grad[3 * i + 2] = g2;
}
"""

#: Threads per block of both kernels.
_THREADS = 128


@functools.cache
def _kernels(device_id: int) -> tuple:
    """The compiled kernels for one device (compiled on first use, then cached)."""
    module = cupy.RawModule(code=_SOURCE)
    return module.get_function("spme_spread"), module.get_function("spme_gather")


def _launch_shape(n: int) -> tuple[tuple[int], tuple[int]]:
    return ((n + _THREADS - 1) // _THREADS,), (_THREADS,)


def _tables(idx: cupy.ndarray, wts: cupy.ndarray, der: cupy.ndarray | None = None) -> tuple:
    idx = cupy.ascontiguousarray(idx, dtype=cupy.int64)
    wts = cupy.ascontiguousarray(wts, dtype=cupy.float64)
    if der is not None:
        der = cupy.ascontiguousarray(der, dtype=cupy.float64)
    return idx, wts, der


def spread(
    charges: cupy.ndarray, idx: cupy.ndarray, wts: cupy.ndarray, mesh: tuple[int, int, int]
) -> cupy.ndarray:
    """Charge mesh ``Q`` of shape ``mesh`` (float64, on the charges' device).

    Parameters
    ----------
    charges : cupy.ndarray of shape (n,)
    idx, wts : cupy.ndarray of shape (3, n, p)
        Mesh indices (int64) and B-spline weights along each axis.
    mesh : tuple of 3 int
    """
    n, p = int(idx.shape[1]), int(idx.shape[2])
    grid = cupy.zeros(tuple(mesh), dtype=cupy.float64)
    if n == 0:
        return grid
    q = cupy.ascontiguousarray(charges, dtype=cupy.float64)
    idx, wts, _ = _tables(idx, wts)
    kernel, _ = _kernels(cupy.cuda.Device().id)
    blocks, threads = _launch_shape(n)
    kernel(
        blocks,
        threads,
        (q, idx, wts, np.int64(n), np.int32(p), np.int64(mesh[1]), np.int64(mesh[2]), grid),
    )
    return grid


def gather(
    phi: cupy.ndarray,
    idx: cupy.ndarray,
    wts: cupy.ndarray,
    der: cupy.ndarray,
    mesh: tuple[int, int, int],
) -> tuple[cupy.ndarray, cupy.ndarray]:
    """Potential and scaled-coordinate gradient of every atom from the convolved mesh.

    Parameters
    ----------
    phi : cupy.ndarray of shape ``mesh``
        The convolved mesh ``K₁K₂K₃ · IFFT(G · Q̂)``.
    idx, wts, der : cupy.ndarray of shape (3, n, p)
        Mesh indices (int64), B-spline weights and their derivatives.
    mesh : tuple of 3 int

    Returns
    -------
    pot : cupy.ndarray of shape (n,)
    grad : cupy.ndarray of shape (n, 3)
        ``∂φ_i/∂u_a`` for a = 0, 1, 2.
    """
    n, p = int(idx.shape[1]), int(idx.shape[2])
    pot = cupy.empty(n, dtype=cupy.float64)
    grad = cupy.empty((n, 3), dtype=cupy.float64)
    if n == 0:
        return pot, grad
    phi = cupy.ascontiguousarray(phi, dtype=cupy.float64)
    idx, wts, der = _tables(idx, wts, der)
    _, kernel = _kernels(cupy.cuda.Device().id)
    blocks, threads = _launch_shape(n)
    kernel(
        blocks,
        threads,
        (
            phi,
            idx,
            wts,
            der,
            np.int64(n),
            np.int32(p),
            np.int64(mesh[1]),
            np.int64(mesh[2]),
            pot,
            grad,
        ),
    )
    return pot, grad
