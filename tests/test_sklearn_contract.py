"""GAPRegressor and SOAP as scikit-learn estimators: parameters, clone, fit, set_params.

scikit-learn's common checks mostly assume 2-D array input; the ones run here
only construct, clone and (re)parametrise estimators, so they apply as they are.
The rest of the contract is written out against small fitted CuAu models:
``fit`` must not touch what the caller passed in (dicts included), and a fitted
model's predictions must depend only on its fitted state, never on parameters
changed with ``set_params`` afterwards.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from ase.build import bulk
from conftest import labelled
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from gapkit import SOAP, GAPRegressor
from gapkit.electrostatics import Ewald

#: Neutral for the equiatomic cells below.
CHARGES = {"Cu": 0.3, "Au": -0.3}


def tiny_soap(**kwargs) -> SOAP:
    return SOAP(r_cut=3.5, n_max=3, l_max=2, **kwargs)


@pytest.fixture(scope="module")
def frames():
    """Five rattled CuAu cells (8 atoms, 4 of each), labelled with EMT."""
    out = []
    for k in range(5):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        atoms.set_chemical_symbols(["Cu", "Au"] * 4)
        atoms.rattle(0.08, seed=k)
        atoms.info["config_type"] = "alloy"
        out.append(labelled(atoms))
    return out


@pytest.fixture(scope="module")
def fitted(frames):
    return GAPRegressor(tiny_soap(), n_sparse=8, random_state=0).fit(frames)


@pytest.fixture(scope="module")
def fitted_with_baseline(frames):
    return GAPRegressor(
        tiny_soap(), n_sparse=8, random_state=0, baseline=Ewald(charges=CHARGES)
    ).fit(frames)


def snapshot(params: dict) -> dict:
    """A deep copy of ``get_params()`` that compares by value: nested estimators by
    their own parameters, calculators by ``todict()``."""
    out = {}
    for key, value in params.items():
        if hasattr(value, "get_params"):
            out[key] = (type(value), snapshot(value.get_params(deep=False)))
        elif hasattr(value, "todict"):
            out[key] = (type(value), copy.deepcopy(value.todict()))
        else:
            out[key] = copy.deepcopy(value)
    return out


def fitted_attributes(estimator) -> list[str]:
    return [k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")]


ESTIMATORS = {
    "GAPRegressor()": lambda: GAPRegressor(),
    "GAPRegressor(SOAP)": lambda: GAPRegressor(SOAP(r_cut=3.5, n_max=3, l_max=2)),
    "SOAP()": lambda: SOAP(),
    "SOAP(species)": lambda: tiny_soap(species=["Cu", "Au"]),
}


@pytest.mark.parametrize(
    "check",
    [
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_get_params_invariance,
        check_set_params,
    ],
    ids=lambda c: c.__name__,
)
@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
def test_sklearn_estimator_checks(check, make):
    estimator = make()
    check(type(estimator).__name__, estimator)


def test_clone_round_trip(fitted, frames):
    twin = clone(fitted)
    assert snapshot(twin.get_params()) == snapshot(fitted.get_params())
    assert twin.descriptor is not fitted.descriptor  # nested estimators are cloned too
    assert fitted_attributes(twin) == []  # an unfitted copy
    assert fitted_attributes(fitted)  # (the check above can fail)
    assert snapshot(clone(twin).get_params()) == snapshot(twin.get_params())
    # refitting the clone reproduces the model
    twin.fit(frames)
    np.testing.assert_allclose(twin.predict(frames), fitted.predict(frames), rtol=1e-12)
    np.testing.assert_allclose(twin.coefficients_, fitted.coefficients_, rtol=1e-10)


@pytest.mark.parametrize("species", [None, ["Au", "Cu"]], ids=["species=None", "species"])
def test_fit_leaves_params_unchanged(frames, species):
    model = GAPRegressor(
        tiny_soap(species=species),
        delta={"Cu": 1.0, "Au": 1.5},
        n_sparse={"Cu": 5, "Au": 6},
        e0={"Cu": -0.1, "Au": -0.2},
        config_type_sigma={"alloy": {"force": 0.2}},
        optimize=["delta"],
        baseline=Ewald(charges=dict(CHARGES)),
        random_state=0,
    )
    objects = model.get_params(deep=False)
    before = snapshot(model.get_params(deep=True))
    model.fit(frames)
    assert snapshot(model.get_params(deep=True)) == before
    # not replaced either: the caller's own objects are still the parameters
    after = model.get_params(deep=False)
    assert all(after[k] is objects[k] for k in objects)
    # the fitted values live in the fitted attributes
    assert model.hyperparameters_["delta"] != {"Cu": 1.0, "Au": 1.5}
    assert model.e0_ == {"Cu": -0.1, "Au": -0.2}


@pytest.mark.parametrize("fixture", ["fitted", "fitted_with_baseline"])
def test_fitted_model_pickles_and_deep_copies(request, frames, fixture):
    model = request.getfixturevalue(fixture)
    energy, std = model.predict(frames[:2], return_std=True)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(twin.predict(frames[:2], return_std=True), (energy, std))


SET_AFTER_FIT = [
    pytest.param("fitted", {"zeta": 2}, id="zeta"),
    pytest.param("fitted", {"variance": "sor"}, id="variance"),
    pytest.param("fitted", {"jitter": 1e-3}, id="jitter"),
    pytest.param("fitted", {"baseline": Ewald(charges=CHARGES)}, id="baseline-added"),
    pytest.param("fitted_with_baseline", {"baseline": None}, id="baseline-removed"),
    pytest.param("fitted", {"delta": 3.0}, id="delta"),
    pytest.param("fitted", {"e0": "zero"}, id="e0"),
    pytest.param("fitted", {"descriptor__r_cut": 3.0}, id="descriptor__r_cut"),
]


@pytest.mark.parametrize("fixture, params", SET_AFTER_FIT)
def test_set_params_after_fit_leaves_predictions_unchanged(request, frames, fixture, params):
    model = clone(request.getfixturevalue(fixture)).fit(frames)
    energy, std = model.predict(frames[:2], return_std=True)
    model.set_params(**params)
    energy_after, std_after = model.predict(frames[:2], return_std=True)
    np.testing.assert_allclose(energy_after, energy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std_after, std, rtol=1e-12, atol=1e-15)
