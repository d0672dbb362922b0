"""Sparse-point selection."""

from __future__ import annotations

import numpy as np
import pytest

from gapkit.sparsify import SPARSE_METHODS, select_sparse_points


@pytest.fixture
def points():
    x = np.random.default_rng(0).normal(size=(300, 6))
    x = np.vstack([x, x[:50]])  # duplicates
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_distinct_and_reproducible(points, method):
    a = select_sparse_points(points, 40, method, np.random.default_rng(1))
    b = select_sparse_points(points, 40, method, np.random.default_rng(1))
    assert len(a) == 40
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.round(points[a], 10), axis=0)) == 40


def test_fewer_distinct_rows_than_requested(points):
    idx = select_sparse_points(points, 1000, "cur", np.random.default_rng(0))
    assert len(idx) == 300


def test_fps_spreads_points_out(points):
    """FPS's smallest pairwise distance beats random selection's."""

    def min_dist(idx):
        x = points[idx]
        d = 2 - 2 * x @ x.T
        return d[np.triu_indices(len(idx), 1)].min()

    fps = select_sparse_points(points, 30, "fps", np.random.default_rng(0))
    rand = select_sparse_points(points, 30, "random", np.random.default_rng(0))
    assert min_dist(fps) > min_dist(rand)


def test_cur_prefers_high_leverage_rows():
    """An outlier direction (leverage ~1) is always picked by CUR."""
    rng = np.random.default_rng(0)
    x = np.zeros((200, 4))
    x[:, :3] = rng.normal(size=(200, 3))
    x[7] = [0, 0, 0, 1.0]
    for seed in range(5):
        assert 7 in select_sparse_points(x, 10, "cur", np.random.default_rng(seed))


def test_candidate_reservoir_is_bounded_and_uniform():
    from gapkit.sparsify import CandidateReservoir

    rng = np.random.default_rng(0)
    reservoir = CandidateReservoir(100, rng)
    for start in range(0, 5000, 37):
        block = np.arange(start, min(start + 37, 5000), dtype=float)[:, None]
        reservoir.add(block)
        assert reservoir._count <= 2 * 100 + 37
    kept = reservoir.rows()[:, 0]
    assert len(kept) == 100 and len(np.unique(kept)) == 100
    # uniform over the stream: early and late rows are both represented
    assert 30 < np.sum(kept < 2500) < 70
