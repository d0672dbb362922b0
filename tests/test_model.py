"""The fitted model: immutable, read by every prediction, versioned on every update.

Regression tests for issue 12, cases 1 and 5 (the numbers in the test names).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_soap
from sklearn.base import clone

from gapkit import GAPRegressor, load
from gapkit.active import IncrementalGAP
from gapkit.model import FittedGAP


@pytest.fixture()
def model(cuau_frames):
    return GAPRegressor(small_soap(), n_sparse=20).fit(cuau_frames[:6])


def test_case1_fitted_state_is_one_immutable_object(model):
    fitted = model.fitted_
    assert isinstance(fitted, FittedGAP)
    with pytest.raises(AttributeError):
        fitted.zeta = 2  # frozen dataclass
    with pytest.raises(ValueError, match="read-only"):
        model.coefficients_[0] = 1.0
    with pytest.raises(AttributeError):
        model.coefficients_ = np.zeros(3)  # a view, not an attribute to assign
    model.e0_["Cu"] = 1e9  # a copy: the model is not changed
    assert model.fitted_.e0["Cu"] != 1e9


def test_case1_predictions_read_the_fitted_model_only(model, cuau_frames, tmp_path):
    test = cuau_frames[6:8]
    energy, std = model.predict(test, return_std=True)
    forces = model.predict_forces(test)
    model.set_params(
        zeta=2,
        variance="sor",
        jitter=0.5,
        delta=7.0,
        e0="zero",
        sigma_force=3.0,
        descriptor=small_soap(r_cut=2.5),
    )
    np.testing.assert_array_equal(model.predict(test, return_std=True), (energy, std))
    for a, b in zip(model.predict_forces(test), forces, strict=True):
        np.testing.assert_array_equal(a, b)
    # the sparse Cholesky factor is stored, not recomputed from the (changed) jitter
    model.save(tmp_path / "m.gap")
    np.testing.assert_array_equal(
        load(tmp_path / "m.gap").predict(test, return_std=True), (energy, std)
    )


def test_case1_set_params_then_refit_applies_the_parameters(model, cuau_frames):
    before = model.predict(cuau_frames[6:8])
    model.set_params(zeta=2).fit(cuau_frames[:6])
    assert model.fitted_.zeta == 2
    assert np.max(np.abs(model.predict(cuau_frames[6:8]) - before)) > 1e-6


def test_case5_every_update_is_a_new_version(model, cuau_frames):
    versions = [model.fitted_.version]
    model.partial_fit(cuau_frames[6:7])
    versions.append(model.fitted_.version)
    model.calibrate(cuau_frames[7:9])
    versions.append(model.fitted_.version)
    inc = IncrementalGAP(model, cuau_frames[:7])
    versions.append(model.fitted_.version)
    inc.add_structures(cuau_frames[7:8])
    versions.append(model.fitted_.version)
    assert len(set(versions)) == len(versions)


def test_case5_partial_fit_updates_the_log_marginal_likelihood(cuau_frames):
    """The likelihood after partial_fit equals that of a fit of all the data with
    the same sparse points, e0 and hyperparameters (an independent fit)."""
    first = GAPRegressor(small_soap(), n_sparse=20).fit(cuau_frames[:5])
    lml_before = first.log_marginal_likelihood_
    first.partial_fit(cuau_frames[5:9])
    reference = GAPRegressor(small_soap(), e0=first.e0_).fit(
        cuau_frames[:9], sparse_points=(first.sparse_features_, first.sparse_numbers_)
    )
    assert first.log_marginal_likelihood_ != lml_before
    assert first.log_marginal_likelihood_ == pytest.approx(
        reference.log_marginal_likelihood_, rel=1e-9
    )
    np.testing.assert_allclose(
        first.coefficients_,
        reference.coefficients_,
        rtol=1e-7,
        atol=1e-9 * np.abs(reference.coefficients_).max(),
    )
    assert first.n_observations_ == reference.n_observations_


def test_case2_partial_fit_with_nan_label_leaves_the_model_unchanged(model, cuau_frames):
    from gapkit.exceptions import InvalidLabelError

    fitted = model.fitted_
    with pytest.raises(InvalidLabelError, match=r"y\[0\]"):
        model.partial_fit(cuau_frames[6:7], y=[np.nan])
    assert model.fitted_ is fitted
    assert np.all(np.isfinite(model.predict(cuau_frames[6:8])))


def test_clone_of_a_fitted_model_is_unfitted(model):
    twin = clone(model)
    assert not hasattr(twin, "fitted_") and not hasattr(twin, "coefficients_")
