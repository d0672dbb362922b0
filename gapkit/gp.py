"""Sparse GP solve by QR, accumulated block by block.

The GAP (projected-process) weights minimise
``|| Lambda^-1/2 (K_NM alpha - y) ||^2 + alpha^T K_MM alpha``, i.e. the
least-squares problem ``min || A alpha - b ||`` with
``A = [Lambda^-1/2 K_NM ; L^T]``, ``b = [Lambda^-1/2 y ; 0]`` and
``K_MM + jitter = L L^T``. The normal equations are never formed: the R factor
of the augmented matrix ``[A | b]`` is folded one block of rows at a time,
``R <- qr([R ; block])``, so memory stays O(M^2 + block) whatever the data size.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .exceptions import NumericalError

__all__ = ["StreamingQR", "cholesky_with_jitter", "log_marginal_likelihood"]


def cholesky_with_jitter(k_mm: np.ndarray, jitter: float) -> np.ndarray:
    """Lower Cholesky factor of ``k_mm + jitter * mean(diag) * I``.

    Raises
    ------
    NumericalError
        When the matrix is not positive definite even with the jitter.
    """
    scale = float(np.mean(np.diag(k_mm))) if len(k_mm) else 1.0
    try:
        return np.linalg.cholesky(k_mm + jitter * scale * np.eye(len(k_mm)))
    except np.linalg.LinAlgError as err:
        raise NumericalError(
            "The sparse-point kernel matrix K_MM is not positive definite "
            f"(jitter {jitter:g} relative). Increase 'jitter' (e.g. 1e-6) or use fewer "
            "sparse points for species with few distinct environments."
        ) from err


class StreamingQR:
    """Accumulate the R factor of ``[A | b]`` over blocks of rows.

    Parameters
    ----------
    n_columns : int
        Number of unknowns (sparse points) M.
    """

    def __init__(self, n_columns: int):
        self.n_columns = n_columns
        self._r = np.zeros((0, n_columns + 1))
        self.n_rows = 0
        self.sum_b2 = 0.0

    @classmethod
    def from_factors(cls, r: np.ndarray, qtb: np.ndarray, residual: float) -> StreamingQR:
        """Resume from the R factor, ``Q^T b`` and the residual of an earlier solve."""
        m = len(r)
        out = cls(m)
        out._r = np.zeros((m + 1, m + 1))
        out._r[:m, :m] = r
        out._r[:m, m] = qtb
        out._r[m, m] = np.sqrt(max(residual, 0.0))
        return out

    def add_rows(self, a: np.ndarray, b: np.ndarray) -> None:
        """Fold rows ``a`` (shape (k, M)) with right-hand side ``b`` (shape (k,))."""
        if len(a) == 0:
            return
        block = np.hstack([a, b[:, None]])
        stacked = np.vstack([self._r, block])
        self._r = scipy.linalg.qr(stacked, mode="r", overwrite_a=True, check_finite=False)[0][
            : self.n_columns + 1
        ]
        self.n_rows += len(a)
        self.sum_b2 += float(b @ b)

    def merge(self, other: StreamingQR) -> None:
        """Fold another accumulator's R into this one (tree reduction)."""
        stacked = np.vstack([self._r, other._r])
        self._r = scipy.linalg.qr(stacked, mode="r", check_finite=False)[0][: self.n_columns + 1]
        self.n_rows += other.n_rows
        self.sum_b2 += other.sum_b2

    @property
    def r(self) -> np.ndarray:
        """Upper-triangular R of shape (M, M)."""
        m = self.n_columns
        out = np.zeros((m, m))
        k = min(m, len(self._r))
        out[:k] = self._r[:k, :m]
        return out

    @property
    def qtb(self) -> np.ndarray:
        """``Q^T b`` of shape (M,)."""
        m = self.n_columns
        out = np.zeros(m)
        k = min(m, len(self._r))
        out[:k] = self._r[:k, m]
        return out

    @property
    def residual(self) -> float:
        """``|b - A alpha|^2`` at the solution (``b^T b - |Q^T b|^2``)."""
        m = self.n_columns
        return float(self._r[m, m] ** 2) if len(self._r) > m else 0.0

    def solve(self) -> np.ndarray:
        """Weights ``alpha = R^-1 Q^T b``."""
        r = self.r
        diag = np.abs(np.diag(r))
        if len(diag) and diag.min() <= diag.max() * 1e-14:
            raise NumericalError(
                "The least-squares system is singular: a sparse point carries no "
                "information. Increase 'jitter' or reduce 'n_sparse'."
            )
        return scipy.linalg.solve_triangular(r, self.qtb, lower=False, check_finite=False)


def log_marginal_likelihood(
    solver: StreamingQR, l_factor: np.ndarray, sigma: np.ndarray
) -> float:
    """Log marginal likelihood of the data under the sparse GP (DTC/SoR prior).

    ``y ~ N(0, K_NM K_MM^-1 K_MN + Lambda)``. With the factors of the fit,
    by the matrix determinant lemma,
    ``log p = -1/2 |b - A alpha|^2
    - 1/2 (sum log sigma_n^2 + 2 sum log|R_kk| - 2 sum log L_kk) - n/2 log 2 pi``.

    Parameters
    ----------
    solver : StreamingQR
        Holding the prior rows ``L^T`` (right-hand side 0) and the data rows
        ``Lambda^-1/2 K_NM`` (right-hand side ``Lambda^-1/2 y``).
    l_factor : ndarray of shape (M, M)
        Cholesky factor of ``K_MM + jitter``.
    sigma : ndarray of shape (n,)
        Noise standard deviation of each data row.
    """
    n = len(sigma)
    log_det = (
        2.0 * np.sum(np.log(sigma))
        + 2.0 * np.sum(np.log(np.abs(np.diag(solver.r))))
        - 2.0 * np.sum(np.log(np.diag(l_factor)))
    )
    return float(-0.5 * solver.residual - 0.5 * log_det - 0.5 * n * np.log(2.0 * np.pi))
