"""Sparse (representative) environments: choice (CUR, farthest-point, random),
checks of points given by the user, and the factor of their kernel matrix.

Sparse points are kept ordered by species (stable), the order every other part
of gapkit assumes (block-diagonal ``K_MM``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers

from .backend import Backend, to_numpy
from .exceptions import InvalidParameterError
from .gp import cholesky_with_jitter
from .kernels import kernel

__all__ = [
    "SPARSE_METHODS",
    "CANDIDATES_PER_SPARSE",
    "MIN_CANDIDATES",
    "CandidateReservoir",
    "select_sparse_points",
    "select_from_features",
    "check_sparse_points",
    "sparse_cholesky",
]

#: Sparse-point candidates kept per species: this many per sparse point ...
CANDIDATES_PER_SPARSE = 20
#: ... and at least this many (all environments of smaller data sets).
MIN_CANDIDATES = 20000

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


class CandidateReservoir:
    """A uniform random sample of at most ``size`` rows from a stream of blocks."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self._rows: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._count = 0

    def add(self, rows: np.ndarray) -> None:
        """Offer rows to the sample."""
        if len(rows) == 0:
            return
        self._rows.append(rows)
        self._keys.append(self.rng.random(len(rows)))
        self._count += len(rows)
        if self._count > 2 * self.size:
            self._shrink()

    def _shrink(self) -> None:
        rows, keys = np.vstack(self._rows), np.concatenate(self._keys)
        keep = np.sort(np.argsort(keys, kind="stable")[: self.size])
        self._rows, self._keys, self._count = [rows[keep]], [keys[keep]], len(keep)

    def rows(self) -> np.ndarray:
        """The sample, in the order the rows arrived."""
        if self._count > self.size:
            self._shrink()
        return np.vstack(self._rows) if self._rows else np.zeros((0, 0))


def select_from_features(
    features: Iterable[np.ndarray],
    numbers: Sequence[np.ndarray],
    n_sparse: Mapping[str, int],
    method: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse points per species from a stream of per-structure descriptors.

    Candidates are kept in a uniform random reservoir of at most
    ``max(CANDIDATES_PER_SPARSE * n_sparse, MIN_CANDIDATES)`` environments per
    species, so memory does not grow with the data set.

    Parameters
    ----------
    features : iterable of ndarray of shape (n_atoms, n_features)
        Normalised descriptors of each structure (may be a generator).
    numbers : sequence of ndarray of shape (n_atoms,)
        Atomic numbers of each structure.
    n_sparse : mapping of str to int
        Points wanted per species symbol (the species, in order).
    method : {"cur", "fps", "random"}
    rng : numpy.random.Generator

    Returns
    -------
    features : ndarray of shape (M, n_features)
    numbers : ndarray of shape (M,)
        Ordered by species as in ``n_sparse``.
    """
    pools = {
        atomic_numbers[s]: CandidateReservoir(max(CANDIDATES_PER_SPARSE * n, MIN_CANDIDATES), rng)
        for s, n in n_sparse.items()
    }
    for f, z in zip(features, numbers, strict=True):
        for zz, pool in pools.items():
            pool.add(f[z == zz])
    q_sparse, z_sparse = [], []
    for s, n in n_sparse.items():
        z = atomic_numbers[s]
        x = pools[z].rows()
        if len(x) == 0:
            continue
        idx = select_sparse_points(x, n, method, rng)
        q_sparse.append(x[idx])
        z_sparse.append(np.full(len(idx), z))
    return np.vstack(q_sparse), np.concatenate(z_sparse)


def check_sparse_points(
    sparse_points, n_features: int, species_numbers: Sequence[int], owner: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate user-given sparse points and order them by species.

    Raises
    ------
    InvalidParameterError
        Not a pair (features, numbers), wrong shapes, non-finite features or
        species the model does not have.
    """
    try:
        q, z = (np.asarray(a) for a in sparse_points)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"{owner}: 'sparse_points' must be a tuple (features, atomic_numbers)."
        ) from err
    if q.ndim != 2 or q.shape[1] != n_features or z.shape != (len(q),):
        raise InvalidParameterError(
            f"{owner}: 'sparse_points' must be features of shape (M, {n_features}) and M "
            f"atomic numbers; got {q.shape} and {z.shape}."
        )
    if not np.issubdtype(q.dtype, np.number) or not np.all(np.isfinite(q)):
        raise InvalidParameterError(f"{owner}: 'sparse_points' features must be finite numbers.")
    unknown = sorted(set(z.tolist()) - {int(x) for x in species_numbers})
    if unknown:
        raise InvalidParameterError(
            f"{owner}: sparse points of species {unknown} the model does not have."
        )
    order = np.argsort(z, kind="stable")
    return q[order].astype(float), z[order].astype(int)


def sparse_cholesky(
    q_sparse: np.ndarray,
    z_sparse: np.ndarray,
    delta: np.ndarray,
    zeta: int,
    jitter: float,
    backend: Backend,
) -> np.ndarray:
    """Block-diagonal (per species) Cholesky factor of ``K_MM + jitter`` (host array).

    Raises
    ------
    NumericalError
        ``K_MM`` of a species is not positive definite even with the jitter.
    """
    m = len(z_sparse)
    l_mm = np.zeros((m, m))
    for z in np.unique(z_sparse):
        cols = np.flatnonzero(z_sparse == z)
        qs = backend.asarray(q_sparse[cols])
        k_mm = kernel(qs, qs, zeta, float(delta[cols[0]]))
        l_mm[np.ix_(cols, cols)] = to_numpy(cholesky_with_jitter(k_mm, jitter))
    return l_mm
