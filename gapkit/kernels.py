"""Dot-product (polynomial) SOAP kernel and the factors of its gradients.

``k(q, q') = delta_s**2 * (q . q')**zeta`` when both centres have species ``s``
and zero otherwise (one independent GP per centre species, like GAP's
``add_species``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["kernel"]


def kernel(q: np.ndarray, q_sparse: np.ndarray, zeta: int, delta: float) -> np.ndarray:
    """Kernel matrix between centres and sparse points of one species.

    Parameters
    ----------
    q : ndarray of shape (n, n_features)
        Normalised descriptors.
    q_sparse : ndarray of shape (m, n_features)
        Normalised descriptors of the sparse points.
    zeta : int
        Exponent of the dot product.
    delta : float
        Energy scale in eV.

    Returns
    -------
    ndarray of shape (n, m)
        ``delta**2 * (q @ q_sparse.T)**zeta`` in eV².
    """
    return delta**2 * (q @ q_sparse.T) ** zeta
