"""Cardinal B-splines and their Euler exponential-spline moduli (used by SPME).

Notes
-----
The cardinal B-spline of order p is supported on [0, p]:

.. math::

    M_2(x) = 1 - |x - 1|, \\qquad
    M_p(x) = \\frac{x}{p-1} M_{p-1}(x) + \\frac{p-x}{p-1} M_{p-1}(x-1),

with derivative :math:`M_p'(x) = M_{p-1}(x) - M_{p-1}(x-1)`. For a scaled
coordinate u (grid units) with w = u - ⌊u⌋, the p non-zero weights are
``W_j = M_p(w + j)`` at grid points ``⌊u⌋ - j`` (j = 0 … p-1); they sum to one.

The moduli (Essmann et al. 1995, eq. 4.4) are

.. math::

    |b(m)|^2 = \\Bigl|\\sum_{k=0}^{p-2} M_p(k+1)\\, e^{2\\pi i m k/K}\\Bigr|^{-2}.

For odd p and even K the sum vanishes at m = K/2; that entry is replaced by the
mean of its neighbours.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

__all__ = ["bspline_weights", "bspline_weights_xp", "bspline_moduli"]


@nb.njit(cache=True, inline="always")
def _fill_weights(w, order, weights, derivs):  # pragma: no cover
    """Weights M_p(w + j) and derivatives M_p'(w + j), j = 0..p-1, for w in [0, 1)."""
    weights[0] = w
    weights[1] = 1.0 - w
    for j in range(2, order):
        weights[j] = 0.0
    for n in range(3, order + 1):
        if n == order:
            # derivative from the order p-1 values
            derivs[0] = weights[0]
            for j in range(1, order):
                derivs[j] = weights[j] - weights[j - 1]
        inv = 1.0 / (n - 1)
        for j in range(n - 1, 0, -1):
            weights[j] = ((w + j) * weights[j] + (n - w - j) * weights[j - 1]) * inv
        weights[0] = w * weights[0] * inv
    if order == 2:
        derivs[0] = 1.0
        derivs[1] = -1.0


@nb.njit(cache=True)
def _weights_many(w, order):  # pragma: no cover
    n = w.shape[0]
    out = np.empty((n, order))
    der = np.empty((n, order))
    buf = np.empty(order)
    dbuf = np.empty(order)
    for i in range(n):
        _fill_weights(w[i], order, buf, dbuf)
        out[i] = buf
        der[i] = dbuf
    return out, der


def bspline_weights(w, order):
    """Cardinal B-spline weights and derivatives for fractional offsets.

    Parameters
    ----------
    w : ndarray of shape (n,)
        Offsets ``u - floor(u)`` in [0, 1), grid units.
    order : int
        Spline order p (≥ 2).

    Returns
    -------
    weights : ndarray of shape (n, order)
        ``M_p(w + j)``.
    derivatives : ndarray of shape (n, order)
        ``M_p'(w + j)`` (derivative with respect to u).
    """
    return _weights_many(np.ascontiguousarray(w, dtype=float), int(order))


def bspline_weights_xp(xp: Any, w: Any, order: int) -> tuple[Any, Any]:
    """Cardinal B-spline weights and derivatives for any array namespace.

    The same recursion as :func:`bspline_weights` (and in the same order of
    operations), vectorised over the offsets, so it runs on NumPy, CuPy and
    ``array_api_strict`` alike.

    Parameters
    ----------
    xp : module
        Array namespace of ``w``.
    w : array of shape (n,)
        Offsets ``u - floor(u)`` in [0, 1), grid units.
    order : int
        Spline order p (≥ 2).

    Returns
    -------
    weights : array of shape (n, order)
        ``M_p(w + j)``.
    derivatives : array of shape (n, order)
        ``M_p'(w + j)`` (derivative with respect to u).
    """
    order = int(order)
    zero = xp.zeros_like(w)
    weights = [w, 1.0 - w] + [zero] * (order - 2)
    derivs = [zero] * order
    for n in range(3, order + 1):
        if n == order:
            derivs = [weights[0]] + [weights[j] - weights[j - 1] for j in range(1, order)]
        inv = 1.0 / (n - 1)
        for j in range(n - 1, 0, -1):
            weights[j] = ((w + j) * weights[j] + (n - w - j) * weights[j - 1]) * inv
        weights[0] = w * weights[0] * inv
    if order == 2:
        derivs = [zero + 1.0, zero - 1.0]
    return xp.stack(weights, axis=-1), xp.stack(derivs, axis=-1)


def _spline_at_integers(order):
    """M_p(k) for k = 0 … p."""
    vals = np.zeros(order + 1)
    w, _ = bspline_weights(np.array([0.0]), order)
    # M_p(0 + j) = w[0, j] for j = 0..p-1, and M_p(p) = 0.
    vals[:order] = w[0]
    return vals


def bspline_moduli(n_points, order):
    """Squared moduli ``|b(m)|²`` of the exponential spline, m = 0 … K-1.

    Parameters
    ----------
    n_points : int
        Mesh size K along one direction.
    order : int
        Spline order p.

    Returns
    -------
    ndarray of shape (K,)
        ``|b(m)|²``; near-zero denominators (odd p, even K, m = K/2) are replaced
        by the mean of the two neighbouring values.
    """
    k = np.arange(n_points)
    mk = _spline_at_integers(order)[1:order]  # M_p(1) … M_p(p-1)
    phase = np.exp(2j * np.pi * np.outer(k, np.arange(order - 1)) / n_points)
    denom = np.abs(phase @ mk) ** 2
    moduli = np.empty(n_points)
    small = denom < 1e-10
    moduli[~small] = 1.0 / denom[~small]
    for m in np.flatnonzero(small):
        left = moduli[(m - 1) % n_points] if not small[(m - 1) % n_points] else 0.0
        right = moduli[(m + 1) % n_points] if not small[(m + 1) % n_points] else 0.0
        moduli[m] = 0.5 * (left + right)
    return moduli
