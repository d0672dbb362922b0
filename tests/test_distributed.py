"""Streaming and Dask fits equal the plain fit; streaming memory is bounded."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import small_soap

from gapkit import GAPRegressor, estimator


def _model(**kwargs):
    return GAPRegressor(small_soap(), n_sparse=40, random_state=0, **kwargs)


def _same_model(a, b, frames):
    """Predictions to 1e-8; weights to what the conditioning of R allows."""
    scale = np.abs(a.coefficients_).max()
    assert np.abs(a.coefficients_ - b.coefficients_).max() < 1e-6 * scale
    np.testing.assert_allclose(a.predict(frames), b.predict(frames), rtol=1e-8)
    fa, fb = np.concatenate(a.predict_forces(frames)), np.concatenate(b.predict_forces(frames))
    assert np.abs(fa - fb).max() < 1e-8 * np.abs(fa).max()


def test_streaming_equals_single_block(cu_data, monkeypatch):
    train = cu_data[0][:10]
    monkeypatch.setattr(estimator, "ROWS_PER_BLOCK", 10**9)
    whole = _model().fit(train)
    monkeypatch.setattr(estimator, "ROWS_PER_BLOCK", 50)  # a fold every structure
    streamed = _model().fit(train)
    _same_model(whole, streamed, cu_data[1][:4])
    assert streamed.log_marginal_likelihood_ == pytest.approx(whole.log_marginal_likelihood_)


def test_streaming_memory_does_not_grow_with_blocks(cu_data, monkeypatch):
    """Peak traced memory of the fit is the same for 8 and for 32 structures."""
    monkeypatch.setattr(estimator, "ROWS_PER_BLOCK", 200)
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
