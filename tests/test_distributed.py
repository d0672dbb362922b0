"""Streaming and Dask fits equal the plain fit; streaming memory is bounded."""

from __future__ import annotations

import tracemalloc
import weakref

import numpy as np
import pytest
from conftest import small_soap

from gapkit import GAPRegressor, rows
from gapkit.distributed import reduce_blocks_qr
from gapkit.gp import StreamingQR


def _model(**kwargs):
    return GAPRegressor(small_soap(), n_sparse=40, random_state=0, **kwargs)


def _same_model(a, b, frames):
    """Weights to 1e-8 relative (in norm), predictions to 1e-8."""
    diff = np.linalg.norm(a.coefficients_ - b.coefficients_)
    assert diff <= 1e-8 * np.linalg.norm(a.coefficients_)
    np.testing.assert_allclose(a.predict(frames), b.predict(frames), rtol=1e-8)
    fa, fb = np.concatenate(a.predict_forces(frames)), np.concatenate(b.predict_forces(frames))
    assert np.abs(fa - fb).max() < 1e-8 * np.abs(fa).max()


def test_streaming_equals_single_block(cu_data, monkeypatch):
    train = cu_data[0][:10]
    monkeypatch.setattr(rows, "ROWS_PER_BLOCK", 10**9)
    whole = _model().fit(train)
    monkeypatch.setattr(rows, "ROWS_PER_BLOCK", 50)  # a fold every structure
    streamed = _model().fit(train)
    _same_model(whole, streamed, cu_data[1][:4])
    assert streamed.log_marginal_likelihood_ == pytest.approx(whole.log_marginal_likelihood_)


def test_streaming_memory_does_not_grow_with_blocks(cu_data, monkeypatch):
    """Peak traced memory of the fit is the same for 8 and for 32 structures."""
    monkeypatch.setattr(rows, "ROWS_PER_BLOCK", 200)
    frames = [a for a in cu_data[0] if a.info["config_type"].startswith("bulk")][:32]
    peaks = []
    for n in (8, 32):
        model = _model()
        tracemalloc.start()
        model.fit(frames[:n])
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0]


@pytest.mark.dask
def test_dask_local_cluster_equals_serial(cu_data):
    pytest.importorskip("dask.distributed")
    train, test = cu_data[0][:12], cu_data[1][:4]
    serial = _model().fit(train)
    on_dask = _model(scheduler="local", n_jobs=2).fit(train)
    assert on_dask.n_observations_ == serial.n_observations_
    _same_model(serial, on_dask, test)
    assert on_dask.log_marginal_likelihood_ == pytest.approx(serial.log_marginal_likelihood_)


def test_local_cluster_workers_run_one_compiled_thread():
    """numba ignores OMP_NUM_THREADS: the local cluster sets its threads itself,
    so two workers on two cores do not start four threads of compiled loops."""
    pytest.importorskip("dask.distributed")
    from gapkit.distributed import dask_client

    def threads():
        import numba

        return numba.get_num_threads()

    with dask_client("local", 2) as client:
        assert set(client.run(threads).values()) == {1}


class _Done:
    """A finished 'future' holding its value."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _EagerClient:
    """Runs every task at submit time and records how many results are alive."""

    def __init__(self):
        self.alive = weakref.WeakSet()
        self.most_alive = 0

    def submit(self, func, *args, pure=True):
        done = _Done(func(*(a.value if isinstance(a, _Done) else a for a in args)))
        self.alive.add(done)
        self.most_alive = max(self.most_alive, len(self.alive))
        return done


def test_block_reduction_holds_few_r_factors_and_equals_one_qr(monkeypatch):
    pytest.importorskip("dask.distributed")
    import dask.distributed

    monkeypatch.setattr(dask.distributed, "wait", lambda future: None)
    rng = np.random.default_rng(0)
    m, blocks = 6, [rng.normal(size=(9, 7)) for _ in range(64)]

    def leaf(block, scale):
        solver = StreamingQR(m)
        solver.add_rows(block[:, :m] * scale, block[:, m] * scale)
        solver.meta = {"n_data": len(block)}
        return solver

    client = _EagerClient()
    reduced = reduce_blocks_qr(client, leaf, iter(blocks), 2.0, window=4)
    assert client.most_alive <= 4 + 7 + 1  # window + log2(64) + the one being merged
    whole = StreamingQR(m)
    stacked = np.vstack(blocks)
    whole.add_rows(2.0 * stacked[:, :m], 2.0 * stacked[:, m])
    np.testing.assert_allclose(reduced.solve(), whole.solve(), rtol=1e-12)
    assert reduced.residual == pytest.approx(whole.residual, rel=1e-12)
    assert reduced.meta["n_data"] == len(stacked)
