"""Sparse GP solve by QR, accumulated block by block.

The GAP (projected-process) weights minimise
``|| Lambda^-1/2 (K_NM alpha - y) ||^2 + alpha^T K_MM alpha``, i.e. the
least-squares problem ``min || A alpha - b ||`` with
``A = [Lambda^-1/2 K_NM ; L^T]``, ``b = [Lambda^-1/2 y ; 0]`` and
``K_MM + jitter = L L^T``. The normal equations are never formed: the R factor
of the augmented matrix ``[A | b]`` is folded one block of rows at a time,
``R <- qr([R ; block])``, so memory stays O(M^2 + block) whatever the data size.

Preconditioning by the prior: with ``prior=L`` the accumulator solves for
``beta = L^T alpha`` instead, folding whitened rows ``K_NM L^-T`` under the
identity (``[I ; Lambda^-1/2 K_NM L^-T]``). Its smallest singular value is at
least 1, so its condition number is that of the data alone (about 1e4 where the
plain system has 1e8-1e9 with jitter 1e-8), and the weights no longer depend
on how the rows were blocked beyond ~1e-13. ``R = R_w L^T`` and ``Q^T b`` are
those of the plain problem, so everything downstream (variances, partial fits,
model files) sees the same factors.

Array API: the accumulator works in the namespace (and on the device) of the
first rows it is given, NumPy or CuPy alike.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .backend import namespace, qr_r, solve_triangular, to_numpy
from .exceptions import NumericalError

__all__ = ["StreamingQR", "cholesky_with_jitter", "log_marginal_likelihood"]


def cholesky_with_jitter(k_mm, jitter: float):
    """Lower Cholesky factor of ``k_mm + jitter * mean(diag) * I`` (any namespace).

    Raises
    ------
    NumericalError
        When the matrix is not positive definite even with the jitter.
    """
    xp = namespace(k_mm)
    m = k_mm.shape[0]
    scale = float(xp.mean(xp.linalg.diagonal(k_mm))) if m else 1.0
    eye = xp.eye(m, dtype=k_mm.dtype, device=array_api_compat.device(k_mm))
    failed = None
    try:
        factor = xp.linalg.cholesky(k_mm + (jitter * scale) * eye)
    except np.linalg.LinAlgError as err:
        failed = err
    else:  # CuPy reports failure with NaNs instead of raising
        if m == 0 or bool(xp.all(xp.isfinite(xp.linalg.diagonal(factor)))):
            return factor
    raise NumericalError(
        "The sparse-point kernel matrix K_MM is not positive definite "
        f"(jitter {jitter:g} relative). Increase 'jitter' (e.g. 1e-6) or use fewer "
        "sparse points for species with few distinct environments."
    ) from failed


class StreamingQR:
    """Accumulate the R factor of ``[A | b]`` over blocks of rows.

    Parameters
    ----------
    n_columns : int
        Number of unknowns (sparse points) M.
    prior : array of shape (M, M), optional
        Lower Cholesky factor ``L`` of ``K_MM + jitter``: rows are whitened and
        the prior rows are the identity (see the module docstring).
    prior_rows : bool, default=True
        With ``prior``, start with the identity rows; False for blocks that
        are merged into an accumulator holding them already.
    """

    def __init__(self, n_columns: int, prior=None, *, prior_rows: bool = True):
        self.n_columns = n_columns
        self._r = None  # (k, M + 1), in the namespace of the first rows added
        self._prior = prior
        self.n_rows = 0
        self.sum_b2 = 0.0
        if prior is not None and prior_rows:
            xp = namespace(prior)
            dev = array_api_compat.device(prior)
            eye = xp.eye(n_columns, dtype=prior.dtype, device=dev)
            self._fold(
                xp,
                xp.concat([eye, xp.zeros((n_columns, 1), dtype=prior.dtype, device=dev)], axis=1),
            )
        #: Additive bookkeeping carried through merges (observation counts,
        #: sums of log noise), e.g. for blocks computed on Dask workers.
        self.meta: dict[str, float] = {}

    @classmethod
    def from_factors(cls, r, qtb, residual: float) -> StreamingQR:
        """Resume from the R factor, ``Q^T b`` and the residual of an earlier solve."""
        xp = namespace(r, qtb)
        m = r.shape[0]
        out = cls(m)
        last = xp.zeros((1, m + 1), dtype=r.dtype, device=array_api_compat.device(r))
        last[0, m] = max(float(residual), 0.0) ** 0.5
        out._r = xp.concat([xp.concat([r, qtb[:, None]], axis=1), last], axis=0)
        return out

    def empty_like(self) -> StreamingQR:
        """A new accumulator for the same unknowns (same prior, no rows)."""
        return type(self)(self.n_columns, self._prior, prior_rows=False)

    def _fold(self, xp, block) -> None:
        stacked = block if self._r is None else xp.concat([self._r, block], axis=0)
        self._r = self._top(qr_r(xp, stacked))

    def add_rows(self, a, b) -> None:
        """Fold rows ``a`` (shape (k, M)) with right-hand side ``b`` (shape (k,)).

        With a prior, ``a`` are rows of the plain problem; they are whitened here.
        """
        if a.shape[0] == 0:
            return
        xp = namespace(a, b)
        if self._prior is not None:
            a = solve_triangular(xp, self._prior, a.T, lower=True).T
        self._fold(xp, xp.concat([a, b[:, None]], axis=1))
        self.n_rows += a.shape[0]
        self.sum_b2 += float(xp.sum(b * b))

    def merge(self, other: StreamingQR) -> None:
        """Fold another accumulator's R into this one (tree reduction)."""
        if other._r is None:
            return
        if (self._prior is None) != (other._prior is None):
            raise ValueError("StreamingQR.merge: one accumulator is whitened, the other not")
        if self._r is None:
            self._r = other._r
        else:
            self._fold(namespace(self._r, other._r), other._r)
        self.n_rows += other.n_rows
        self.sum_b2 += other.sum_b2
        for key, value in other.meta.items():
            self.meta[key] = self.meta.get(key, 0) + value

    def without(self, part: StreamingQR) -> StreamingQR:
        """The accumulator of this one's rows less ``part``'s (a cross-validation fold).

        ``part`` holds a subset of the rows folded here (made with
        :meth:`empty_like`). The Gram matrix of the augmented factor is
        downdated, ``G = R^T R - R_p^T R_p``, and factored again by Cholesky.
        With a prior the factors are whitened and ``G`` keeps the identity of
        the prior rows, so its smallest eigenvalue is at least 1 and the
        downdate is well conditioned. Cost O(M^3), no rows are needed again.

        Raises
        ------
        NumericalError
            When the downdated matrix is not positive definite (``part`` holds
            rows this accumulator does not).
        """
        m = self.n_columns
        full, sub = self._padded(), part._padded()
        xp = namespace(full, sub)
        gram = full.T @ full - sub.T @ sub
        failed = "StreamingQR.without: the downdated matrix is not positive definite"
        try:
            upper = xp.linalg.cholesky(gram[:m, :m]).T
        except np.linalg.LinAlgError as err:
            raise NumericalError(failed) from err
        if m and not bool(xp.all(xp.isfinite(xp.linalg.diagonal(upper)))):
            raise NumericalError(failed)
        qtb = solve_triangular(xp, upper, gram[:m, m], lower=False, trans=True)
        rho2 = max(float(gram[m, m]) - float(xp.sum(qtb * qtb)), 0.0)
        out = type(self)(m, self._prior, prior_rows=False)
        last = xp.zeros((1, m + 1), dtype=full.dtype, device=array_api_compat.device(full))
        last[0, m] = rho2**0.5
        out._r = xp.concat([xp.concat([upper, qtb[:, None]], axis=1), last], axis=0)
        out.n_rows = self.n_rows - part.n_rows
        out.sum_b2 = self.sum_b2 - part.sum_b2
        return out

    def _top(self, r):
        """The first M + 1 rows of a QR's R (those below are zero)."""
        return r[: self.n_columns + 1, ...] if r.shape[0] > self.n_columns + 1 else r

    def _padded(self):
        """``_r`` padded with zero rows to (M + 1, M + 1) (NumPy when nothing was added)."""
        m = self.n_columns
        if self._r is None:
            return np.zeros((m + 1, m + 1))
        xp = namespace(self._r)
        k = self._r.shape[0]
        if k >= m + 1:
            return self._r
        pad = xp.zeros(
            (m + 1 - k, m + 1), dtype=self._r.dtype, device=array_api_compat.device(self._r)
        )
        return xp.concat([self._r, pad], axis=0)

    @property
    def whitened_r(self):
        """R of the folded rows as they are (``R_w`` with a prior, else ``R``)."""
        m = self.n_columns
        return self._padded()[:m, :m]

    @property
    def r(self):
        """Upper-triangular R of the plain problem, shape (M, M): ``R^T R`` is the
        posterior precision of the weights (``R_w L^T`` with a prior)."""
        r = self.whitened_r
        if self._prior is None:
            return r
        return r @ self._prior.T

    @property
    def qtb(self):
        """``Q^T b`` of shape (M,)."""
        m = self.n_columns
        return self._padded()[:m, m]

    @property
    def residual(self) -> float:
        """``|b - A alpha|^2`` at the solution (``b^T b - |Q^T b|^2``)."""
        m = self.n_columns
        return float(self._padded()[m, m] ** 2)

    def log_det_posterior_ratio(self, l_factor=None) -> float:
        """``log |R^T R| - log |L L^T|`` (needs ``l_factor`` without a prior)."""
        r = self.whitened_r
        xp = namespace(r)
        value = 2.0 * float(xp.sum(xp.log(xp.abs(xp.linalg.diagonal(r)))))
        if self._prior is None:
            value -= 2.0 * float(xp.sum(xp.log(xp.linalg.diagonal(l_factor))))
        return value

    def solve(self):
        """Weights ``alpha = R^-1 Q^T b``."""
        r = self.whitened_r
        xp = namespace(r)
        diag = xp.abs(xp.linalg.diagonal(r))
        if diag.shape[0] and float(xp.min(diag)) <= float(xp.max(diag)) * 1e-14:
            raise NumericalError(
                "The least-squares system is singular: a sparse point carries no "
                "information. Increase 'jitter' or reduce 'n_sparse'."
            )
        x = solve_triangular(xp, r, self.qtb, lower=False)
        if self._prior is None:
            return x
        return solve_triangular(xp, self._prior, x, lower=True, trans=True)


def log_marginal_likelihood(
    solver: StreamingQR,
    l_factor,
    sigma=None,
    *,
    n_data: int | None = None,
    sum_log_sigma: float | None = None,
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
        Cholesky factor of ``K_MM + jitter`` (not used when ``solver`` was
        made with ``prior``).
    sigma : ndarray of shape (n,)
        Noise standard deviation of each data row; or give ``n_data`` and
        ``sum_log_sigma`` (``sum log sigma_n``) instead.
    """
    if sigma is not None:
        n_data, sum_log_sigma = sigma.shape[0], float(np.sum(np.log(to_numpy(sigma))))
    n = n_data
    log_det = 2.0 * sum_log_sigma + solver.log_det_posterior_ratio(l_factor)
    return float(-0.5 * solver.residual - 0.5 * log_det - 0.5 * n * np.log(2.0 * np.pi))
