"""Hyperparameters by maximum marginal likelihood."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_soap

from gapkit import GAPRegressor
from gapkit.exceptions import InvalidParameterError


@pytest.fixture(scope="module")
def fits(cu_data):
    train = cu_data[0][:12]
    base = GAPRegressor(small_soap(), n_sparse=40, random_state=0).fit(train)
    tuned = GAPRegressor(small_soap(), n_sparse=40, random_state=0, optimize=True).fit(train)
    return train, base, tuned


def test_optimisation_raises_the_likelihood(fits):
    _, base, tuned = fits
    assert tuned.log_marginal_likelihood_ > base.log_marginal_likelihood_
    assert tuned.optimize is True and tuned.sigma_force == 0.1  # arguments untouched
    h = tuned.hyperparameters_
    assert set(h) == {"delta", "sigma_energy", "sigma_force", "sigma_virial"}
    assert all(1e-6 <= h[k] <= 1e2 for k in ("sigma_energy", "sigma_force", "sigma_virial"))


def test_optimum_is_a_stationary_point(fits):
    """Refitting at the optimum reproduces it; moving any hyperparameter lowers the LML."""
    train, _, tuned = fits
    h = tuned.hyperparameters_
    refit = GAPRegressor(
        small_soap(),
        n_sparse=40,
        random_state=0,
        delta=h["delta"],
        sigma_energy=h["sigma_energy"],
        sigma_force=h["sigma_force"],
        sigma_virial=h["sigma_virial"],
    ).fit(train)
    assert refit.log_marginal_likelihood_ == pytest.approx(tuned.log_marginal_likelihood_, rel=1e-6)
    np.testing.assert_allclose(refit.predict(train), tuned.predict(train), atol=1e-7)
    for name in ("sigma_force", "sigma_energy"):
        for factor in (0.8, 1.25):
            moved = GAPRegressor(
                small_soap(),
                n_sparse=40,
                random_state=0,
                delta=h["delta"],
                **{k: h[k] for k in ("sigma_energy", "sigma_force", "sigma_virial")},
            )
            moved.set_params(**{name: h[name] * factor}).fit(train)
            assert moved.log_marginal_likelihood_ < tuned.log_marginal_likelihood_


def test_subset_and_validation(cu_data):
    train = cu_data[0][:6]
    only = GAPRegressor(small_soap(), n_sparse=20, random_state=0, optimize=["sigma_force"]).fit(
        train
    )
    assert only.hyperparameters_["delta"] == {"Cu": 1.0}
    assert only.hyperparameters_["sigma_energy"] == 0.002
    with pytest.raises(InvalidParameterError, match="'optimize'"):
        GAPRegressor(small_soap(), optimize=["zeta"]).fit(train)
