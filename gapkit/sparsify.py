"""Choice of sparse (representative) environments: CUR, farthest-point, random."""

from __future__ import annotations

import numpy as np

__all__ = ["select_sparse_points", "SPARSE_METHODS"]

SPARSE_METHODS = ("cur", "fps", "random")


def _unique_rows(x: np.ndarray, decimals: int = 10) -> np.ndarray:
    """Indices of the first occurrence of each distinct row (rounded)."""
    _, first = np.unique(np.round(x, decimals), axis=0, return_index=True)
    return np.sort(first)


def select_sparse_points(
    x: np.ndarray, n_sparse: int, method: str, rng: np.random.Generator
) -> np.ndarray:
    """Pick up to ``n_sparse`` distinct rows of ``x`` as sparse points.

    Parameters
    ----------
    x : ndarray of shape (n, n_features)
        Normalised descriptors of one species.
    n_sparse : int
        Number of points wanted; fewer are returned when ``x`` has fewer
        distinct rows.
    method : {"cur", "fps", "random"}
        ``"cur"`` samples rows without replacement with probability
        proportional to their statistical leverage in the top singular
        vectors (Mahoney & Drineas, PNAS 106, 697 (2009)); ``"fps"`` is greedy
        farthest-point sampling on the distance ``sqrt(2 - 2 q . q')``, started
        from a random row; ``"random"`` is uniform.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int
        Row indices into ``x``, sorted.
    """
    candidates = _unique_rows(x)
    if len(candidates) <= n_sparse:
        return candidates
    xc = x[candidates]
    if method == "random":
        chosen = rng.choice(len(xc), n_sparse, replace=False)
    elif method == "cur":
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        rank = int(np.sum(s > s[0] * 1e-10))
        k = min(n_sparse, rank)
        leverage = np.sum((xc @ vt[:k].T / s[:k]) ** 2, axis=1)
        p = leverage / leverage.sum()
        n_positive = int(np.count_nonzero(p > 0))
        if n_positive >= n_sparse:
            chosen = rng.choice(len(xc), n_sparse, replace=False, p=p)
        else:
            rest = np.flatnonzero(p == 0)
            chosen = np.concatenate(
                [np.flatnonzero(p > 0), rng.choice(rest, n_sparse - n_positive, replace=False)]
            )
    elif method == "fps":
        chosen = np.empty(n_sparse, dtype=int)
        chosen[0] = rng.integers(len(xc))
        dist = 2.0 - 2.0 * xc @ xc[chosen[0]]
        for k in range(1, n_sparse):
            chosen[k] = int(np.argmax(dist))
            dist = np.minimum(dist, 2.0 - 2.0 * xc @ xc[chosen[k]])
    else:  # validated by the caller
        raise ValueError(method)
    return np.sort(candidates[chosen])
