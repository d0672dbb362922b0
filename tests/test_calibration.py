"""Std scales cross-validated by ``fit``: from unseen data, per kind, calibrated on a GP draw."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import labelled, small_soap
from scipy.special import erf
from sklearn.base import clone

from gapkit import GAPRegressor, load
from gapkit.active import IncrementalGAP
from gapkit.calibration import KINDS, assign_folds, held_out_mask, n_folds_for
from gapkit.design import design_rows
from gapkit.exceptions import InvalidParameterError, MissingLabelError, ModelFileError
from gapkit.gp import StreamingQR


def _z2(model, frames, kind):
    """Squared z-scores of ``kind`` with ``model``'s stds, unscaled."""
    raw = model.fitted_.replace(std_scale=1.0)
    res = raw.predict(frames, forces=kind == "forces", stress=kind == "stress", std=True)
    key = {"energy": "energy", "forces": "forces", "stress": "stress"}[kind]
    err = np.concatenate(
        [np.ravel(r[key] - a.calc.results[key]) for r, a in zip(res, frames, strict=True)]
    )
    std = np.concatenate([np.ravel(r[f"{key}_std"]) for r in res])
    return (err / std) ** 2


@pytest.fixture(scope="module")
def cu_bulk():
    """Twenty rattled, strained 8-atom Cu cells with EMT energies, forces and stresses."""
    rng = np.random.default_rng(7)
    frames = []
    for k in range(20):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        atoms.set_cell(atoms.cell.array * (1 + rng.uniform(-0.03, 0.03)), scale_atoms=True)
        atoms.rattle(0.12, seed=k)
        frames.append(labelled(atoms))
    return frames


@pytest.fixture(scope="module")
def cv_model(cu_bulk):
    return GAPRegressor(
        small_soap(), n_sparse=40, sigma_force=0.01, sigma_energy=0.001, random_state=3
    ).fit(cu_bulk)


def test_default_scales_are_those_of_refits_without_each_fold(cv_model, cu_bulk):
    """The scale of each kind equals mean z^2 of every structure predicted by a model
    fitted (same sparse points, e0, hyperparameters) on the other folds only."""
    model = cv_model
    assert model.calibration_["method"] == "cross-validation"
    assert model.calibration_["n_folds"] == 5
    folds = assign_folds(len(cu_bulk), 5, model.random_state_)
    z2 = {k: [] for k in KINDS}
    for f in range(5):
        train = [a for a, g in zip(cu_bulk, folds, strict=True) if g != f]
        test = [a for a, g in zip(cu_bulk, folds, strict=True) if g == f]
        refit = clone(model).set_params(cv=None, e0=model.e0_)
        refit.fit(train, sparse_points=(model.sparse_features_, model.sparse_numbers_))
        assert refit.std_scale_ == dict.fromkeys(KINDS, 1.0)
        for kind in KINDS:
            z2[kind].append(_z2(refit, test, kind))
    for kind in KINDS:
        expected = np.sqrt(np.mean(np.concatenate(z2[kind])))
        assert model.std_scale_[kind] == pytest.approx(expected, rel=1e-6), kind
    # scales from the training residuals (the model scoring its own data) are smaller
    for kind in ("forces", "energy"):
        own = np.sqrt(np.mean(_z2(model, cu_bulk, kind)))
        assert model.std_scale_[kind] > 1.2 * own


def test_scales_apply_per_kind(cv_model, cu_bulk):
    frames = cu_bulk[:2]
    raw = clone(cv_model)
    raw.fitted_ = cv_model.fitted_.replace(std_scale=1.0)
    s = cv_model.std_scale_
    assert len(set(s.values())) == 3  # three different scales
    for method, kind in (("predict", "energy"), ("predict_forces", "forces")):
        _, std = getattr(cv_model, method)(frames, return_std=True)
        _, std_raw = getattr(raw, method)(frames, return_std=True)
        np.testing.assert_allclose(
            np.concatenate([np.ravel(x) for x in std]),
            s[kind] * np.concatenate([np.ravel(x) for x in std_raw]),
        )
    _, std = cv_model.predict_stress(frames, return_std=True)
    _, std_raw = raw.predict_stress(frames, return_std=True)
    np.testing.assert_allclose(std, s["stress"] * std_raw)
    _, loc = cv_model.predict_local_energies(frames, return_std=True)
    _, loc_raw = raw.predict_local_energies(frames, return_std=True)
    np.testing.assert_allclose(loc[0], s["energy"] * loc_raw[0])


def test_cross_validation_does_not_change_the_fit(cv_model, cu_bulk):
    plain = clone(cv_model).set_params(cv=None).fit(cu_bulk)
    assert plain.calibration_ == {"method": "none"}
    assert plain.std_scale_ == dict.fromkeys(KINDS, 1.0)
    np.testing.assert_allclose(plain.coefficients_, cv_model.coefficients_, rtol=1e-8, atol=1e-10)
    assert plain.log_marginal_likelihood_ == pytest.approx(cv_model.log_marginal_likelihood_)


def test_folds_and_held_out_sample():
    folds = assign_folds(11, 5, 0)
    assert sorted(np.bincount(folds)) == [2, 2, 2, 2, 3]
    assert np.array_equal(folds, assign_folds(11, 5, 0))
    assert n_folds_for(None, 10) == 0 and n_folds_for(1, 10) == 0
    assert n_folds_for(5, 1) == 0 and n_folds_for(5, 3) == 3 and n_folds_for(5, 40) == 5
    keep = held_out_mask([100] * 50, 10, 0, max_elements=10 * 1000)
    assert keep.sum() == 10  # the sample fits the budget
    assert held_out_mask([100] * 5, 10, 0, max_elements=10 * 1000).all()


def test_streaming_qr_without_equals_fold_of_the_rest():
    rng = np.random.default_rng(0)
    m = 6
    a = rng.standard_normal((40, m))
    b = rng.standard_normal(40)
    prior = np.linalg.cholesky(np.eye(m) * 2 + 0.1)
    full, part, rest = (StreamingQR(m, prior=prior) for _ in range(3))
    full.add_rows(a, b)
    part = full.empty_like()
    part.add_rows(a[:15], b[:15])
    rest.add_rows(a[15:], b[15:])
    out = full.without(part)
    np.testing.assert_allclose(out.solve(), rest.solve(), rtol=1e-10)
    np.testing.assert_allclose(np.abs(out.r), np.abs(rest.r), rtol=1e-9, atol=1e-12)
    assert out.residual == pytest.approx(rest.residual, rel=1e-8)


def _gp_draw_frames(n, seed):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.15, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    return frames


def test_coverage_on_a_gp_draw_is_nominal_on_held_out_structures():
    """The truth is a draw of the sparse GP prior (energies and forces of the same
    draw). With ``delta`` 5x too small the raw stds are far off; the cross-validated
    scales bring the coverage of unseen structures to within 10 points of nominal."""
    soap = small_soap(species=["Cu"])
    frames = _gp_draw_frames(70, 1)
    rng = np.random.default_rng(2)
    q_all = np.concatenate([soap.features(a) for a in frames[:20]])
    q = q_all[rng.choice(len(q_all), 30, replace=False)]
    z = np.full(30, 29)
    zeta, delta_true, sigma_f, sigma_e = 4, 1.0, 0.01, 0.001
    k_mm = delta_true**2 * (q @ q.T) ** zeta
    u = np.linalg.cholesky(k_mm + 1e-10 * np.eye(30)) @ rng.standard_normal(30)
    alpha = np.linalg.solve(k_mm + 1e-10 * np.eye(30), u)
    for atoms in frames:
        rows = design_rows(
            soap.features_and_derivatives(atoms),
            q,
            z,
            np.full(30, delta_true),
            zeta,
            forces=True,
            virial=False,
        )
        energy = rows["energy"] @ alpha + sigma_e * np.sqrt(len(atoms)) * rng.standard_normal()
        forces = rows["forces"] @ alpha + sigma_f * rng.standard_normal((len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=forces)
    train, test = frames[:40], frames[40:]
    model = GAPRegressor(
        soap,
        zeta=zeta,
        delta=0.2,
        sigma_force=sigma_f,
        sigma_energy=sigma_e,
        e0={"Cu": 0.0},
        random_state=0,
    )
    model.fit(train, sparse_points=(q, z))
    raw = np.abs(model.predict_forces(test, return_std=True)[1][0]).mean()
    f, f_std = model.predict_forces(test, return_std=True)
    err = np.concatenate([(p - a.get_forces()).ravel() for p, a in zip(f, test, strict=True)])
    zf = np.abs(err) / np.concatenate([s.ravel() for s in f_std])
    assert raw > 0
    assert abs(np.mean(zf <= 1) - erf(1 / np.sqrt(2))) < 0.10
    assert abs(np.mean(zf <= 2) - erf(2 / np.sqrt(2))) < 0.10
    # without the scales, the same model is far from calibrated
    zf_raw = zf * model.std_scale_["forces"]
    assert abs(np.mean(zf_raw <= 1) - erf(1 / np.sqrt(2))) > 0.2


def test_calibrate_fits_each_labelled_kind(cv_model, cu_bulk):
    model = clone(cv_model)
    model.fitted_ = cv_model.fitted_
    valid = cu_bulk[:6]
    model.calibrate(valid)
    assert model.calibration_["method"] == "validation"
    for kind in KINDS:
        assert model.std_scale_[kind] == pytest.approx(np.sqrt(np.mean(_z2(model, valid, kind))))
    # only forces: the other kinds keep their cross-validated scales
    model.fitted_ = cv_model.fitted_
    model.calibrate(valid, on="forces")
    assert model.std_scale_["energy"] == cv_model.std_scale_["energy"]
    assert model.std_scale_["forces"] != cv_model.std_scale_["forces"]
    with pytest.raises(InvalidParameterError, match="'on' must name kinds"):
        model.calibrate(valid, on="force")
    with pytest.raises(MissingLabelError, match="no forces labels"):
        model.calibrate([_energy_only(valid[0])], on="forces")


def _energy_only(atoms):
    a = atoms.copy()
    a.calc = SinglePointCalculator(a, energy=atoms.get_potential_energy())
    return a


def test_scales_and_calibration_round_trip_through_files(cv_model, tmp_path):
    path = tmp_path / "m.gap"
    cv_model.save(path)
    back = load(path)
    assert back.std_scale_ == cv_model.std_scale_
    assert back.calibration_ == cv_model.calibration_
    # a file written before scales per kind held one number
    from gapkit.io import read_model_file, write_model_file

    header, arrays = read_model_file(path)
    header["model"]["std_scale"] = 2.5
    del header["model"]["calibration"]
    old = tmp_path / "old.gap"
    write_model_file(old, header, arrays)
    assert load(old).std_scale_ == dict.fromkeys(KINDS, 2.5)
    header["model"]["std_scale"] = {"energy": 1.0, "forces": -1.0, "stress": 1.0}
    bad = tmp_path / "bad.gap"
    write_model_file(bad, header, arrays)
    with pytest.raises(ModelFileError, match="forces"):
        load(bad)
    assert json.dumps(cv_model.calibration_)  # plain JSON


def test_incremental_updates_recalibrate_as_a_fit_would(cv_model, cu_bulk):
    model = clone(cv_model)
    inc = IncrementalGAP(model, cu_bulk[:8])
    first = dict(model.std_scale_)
    inc.add_structures(cu_bulk[8:])
    assert model.std_scale_ != first
    refit = clone(cv_model).set_params(e0=model.e0_)
    refit.fit(cu_bulk, sparse_points=(model.sparse_features_, model.sparse_numbers_))
    for kind in KINDS:
        assert model.std_scale_[kind] == pytest.approx(refit.std_scale_[kind], rel=1e-6)
    assert model.calibration_["n_held_out"] == refit.calibration_["n_held_out"]


def test_one_structure_or_cv_none_is_not_calibrated(cu_bulk):
    one = GAPRegressor(small_soap(), n_sparse=10).fit(cu_bulk[:1])
    assert one.calibration_ == {"method": "none"}
    with pytest.raises(InvalidParameterError, match="'cv' must be"):
        GAPRegressor(small_soap(), cv=0).fit(cu_bulk[:2])


def test_optimized_hyperparameters_are_cross_validated_at_the_fitted_values(cu_bulk):
    model = GAPRegressor(small_soap(), n_sparse=20, optimize=["sigma_force"], random_state=0)
    model.fit(cu_bulk[:10])
    fixed = clone(model).set_params(
        optimize=False, e0=model.e0_, sigma_force=model.hyperparameters_["sigma_force"]
    )
    fixed.fit(cu_bulk[:10], sparse_points=(model.sparse_features_, model.sparse_numbers_))
    for kind in KINDS:
        assert model.std_scale_[kind] == pytest.approx(fixed.std_scale_[kind], rel=1e-5)


@pytest.mark.dask
def test_dask_fit_gives_the_serial_scales(cv_model, cu_bulk):
    pytest.importorskip("dask.distributed")
    on_dask = clone(cv_model).set_params(scheduler="local", n_jobs=2).fit(cu_bulk)
    for kind in KINDS:
        assert on_dask.std_scale_[kind] == pytest.approx(cv_model.std_scale_[kind], rel=1e-8)
    assert on_dask.calibration_ == cv_model.calibration_


def test_incremental_updates_keep_scales_from_a_validation_set(cv_model, cu_bulk):
    model = clone(cv_model).fit(cu_bulk[:8])
    model.calibrate(cu_bulk[8:12])
    scales = dict(model.std_scale_)
    IncrementalGAP(model, cu_bulk[:8]).add_structures(cu_bulk[12:])
    assert model.std_scale_ == scales and model.calibration_["method"] == "validation"
