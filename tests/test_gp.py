"""QR solve of the sparse GP: streaming equals dense, equals the GAP formula."""

from __future__ import annotations

import numpy as np
import pytest

from gapkit.exceptions import NumericalError
from gapkit.gp import StreamingQR, cholesky_with_jitter


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    m, n = 12, 200
    x = rng.normal(size=(m, 5))
    k_mm = (x @ x.T) ** 2 + 1e-3 * np.eye(m)
    k_nm = rng.normal(size=(n, m))
    y = rng.normal(size=n)
    sigma = rng.uniform(0.1, 1.0, n)
    return k_mm, k_nm, y, sigma


def test_streaming_qr_equals_gap_solution(problem):
    k_mm, k_nm, y, sigma = problem
    m = len(k_mm)
    chol = cholesky_with_jitter(k_mm, 0.0)
    solver = StreamingQR(m)
    solver.add_rows(chol.T, np.zeros(m))
    for start in range(0, len(y), 37):  # uneven blocks
        sl = slice(start, start + 37)
        solver.add_rows(k_nm[sl] / sigma[sl, None], y[sl] / sigma[sl])
    alpha = solver.solve()
    lam_inv = 1.0 / sigma**2
    expected = np.linalg.solve(k_mm + k_nm.T @ (lam_inv[:, None] * k_nm), k_nm.T @ (lam_inv * y))
    np.testing.assert_allclose(alpha, expected, rtol=1e-9)
    # R^T R is the posterior precision.
    precision = k_mm + k_nm.T @ (lam_inv[:, None] * k_nm)
    np.testing.assert_allclose(solver.r.T @ solver.r, precision, rtol=1e-9, atol=1e-9)


def test_merge_is_tree_reduction(problem):
    k_mm, k_nm, y, sigma = problem
    m = len(k_mm)
    whole, left, right = StreamingQR(m), StreamingQR(m), StreamingQR(m)
    whole.add_rows(k_nm, y)
    left.add_rows(k_nm[:90], y[:90])
    right.add_rows(k_nm[90:], y[90:])
    left.merge(right)
    np.testing.assert_allclose(left.solve(), whole.solve(), rtol=1e-9)
    assert left.n_rows == whole.n_rows == len(y)


def test_not_positive_definite_is_a_clear_error():
    with pytest.raises(NumericalError, match="jitter"):
        cholesky_with_jitter(-np.eye(3), 1e-8)


def test_singular_system_is_reported():
    solver = StreamingQR(3)
    solver.add_rows(np.array([[1.0, 0.0, 0.0]]), np.array([1.0]))
    with pytest.raises(NumericalError, match="singular"):
        solver.solve()


def test_log_marginal_likelihood_matches_dense_gaussian(problem):
    from scipy.stats import multivariate_normal

    from gapkit.gp import log_marginal_likelihood

    k_mm, k_nm, y, sigma = problem
    m = len(k_mm)
    chol = cholesky_with_jitter(k_mm, 1e-8)
    solver = StreamingQR(m)
    solver.add_rows(chol.T, np.zeros(m))
    solver.add_rows(k_nm / sigma[:, None], y / sigma)
    k_jit = chol @ chol.T
    cov = k_nm @ np.linalg.solve(k_jit, k_nm.T) + np.diag(sigma**2)
    expected = multivariate_normal(np.zeros(len(y)), cov).logpdf(y)
    assert log_marginal_likelihood(solver, chol, sigma) == pytest.approx(expected, rel=1e-9)
