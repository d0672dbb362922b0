"""The numeric code runs unchanged on any array-API namespace.

Every function is run on ``array_api_strict`` (the reference namespace, which
rejects anything outside the standard) and compared with NumPy; the whole
estimator is run with its device backend swapped for ``array_api_strict``, so
that every line the GPU path takes is exercised without a GPU. With CuPy and a
CUDA device the same comparisons run on the GPU (marker ``gpu``).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import small_soap

import gapkit.calculator
import gapkit.estimator
from gapkit import GAPRegressor, backend, design, gp, kernels, uncertainty
from gapkit.exceptions import DeviceUnavailableError, InvalidParameterError, NumericalError

xps = pytest.importorskip("array_api_strict")

CUDA, WHY_NOT = backend.cuda_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason=f"no GPU: {WHY_NOT}")


def on_strict(x):
    return xps.asarray(np.asarray(x))


@pytest.fixture(
    params=[
        pytest.param("strict", id="array_api_strict"),
        pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, needs_gpu]),
    ]
)
def space(request):
    """(converter from NumPy, namespace): array_api_strict, and CuPy where a GPU is."""
    if request.param == "strict":
        return on_strict, xps
    import array_api_compat.cupy as xcp
    import cupy

    return (lambda x: cupy.asarray(np.asarray(x))), xcp


def close(strict_value, numpy_value, rtol=1e-10, atol=1e-13):
    np.testing.assert_allclose(backend.to_numpy(strict_value), numpy_value, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def alloy(cuau_frames, cuau_model):
    """A CuAu structure's descriptor with derivatives and the model's arrays."""
    atoms = cuau_frames[4]
    desc = cuau_model.descriptor_.features_and_derivatives(atoms)
    return desc, cuau_model, atoms


def test_kernel_on_other_namespaces(alloy, space):
    conv, xp = space
    desc, model, _ = alloy
    q, qs = desc.features[:5], model.sparse_features_[:7]
    k = kernels.kernel(conv(q), conv(qs), 4, 1.3)
    k_np = kernels.kernel(q, qs, 4, 1.3)
    close(k, k_np)
    np.testing.assert_allclose(k_np, 1.3**2 * np.einsum("if,mf->im", q, qs) ** 4, rtol=1e-14)
    assert isinstance(k, type(conv(q)))  # stays in its namespace


@pytest.mark.parametrize("forces, virial", [(True, True), (False, False)])
def test_design_rows_on_other_namespaces(alloy, forces, virial, space):
    conv, xp = space
    desc, model, _ = alloy
    args = (model.sparse_numbers_,)
    ref = design.design_rows(
        desc, model.sparse_features_, *args, model.delta_, model.zeta, forces=forces, virial=virial
    )
    got = design.design_rows(
        desc,
        conv(model.sparse_features_),
        *args,
        conv(model.delta_),
        model.zeta,
        forces=forces,
        virial=virial,
    )
    assert set(got) == set(ref)
    for key in ref:
        close(got[key], ref[key])


def test_predict_structure_on_other_namespaces(alloy, space):
    conv, xp = space
    desc, model, atoms = alloy
    w = model.coefficients_ * model.delta_**2
    ref = design.predict_structure(
        desc, model.sparse_features_, model.sparse_numbers_, w, model.zeta
    )
    got = design.predict_structure(
        desc, conv(model.sparse_features_), model.sparse_numbers_, conv(w), model.zeta
    )
    for key in ("energies", "forces", "virial"):
        close(got[key], ref[key])
    # the forces are those of the fitted model (not only self-consistent)
    np.testing.assert_allclose(
        backend.to_numpy(got["forces"]), model.predict_forces([atoms])[0], rtol=1e-9, atol=1e-12
    )


def test_local_energy_rows_on_other_namespaces(alloy, space):
    conv, xp = space
    desc, model, _ = alloy
    ref = design.local_energy_rows(
        desc.features,
        desc.numbers,
        model.sparse_features_,
        model.sparse_numbers_,
        model.delta_,
        model.zeta,
    )
    got = design.local_energy_rows(
        desc.features,
        desc.numbers,
        conv(model.sparse_features_),
        model.sparse_numbers_,
        conv(model.delta_),
        model.zeta,
    )
    close(got, ref)
    # rows sum to the energy row of the design matrix
    energy_row = design.design_rows(
        desc,
        model.sparse_features_,
        model.sparse_numbers_,
        model.delta_,
        model.zeta,
        forces=False,
        virial=False,
    )
    np.testing.assert_allclose(ref.sum(axis=0), energy_row["energy"], rtol=1e-12)


def test_streaming_qr_on_other_namespaces(space):
    to_other, _ = space
    rng = np.random.default_rng(1)
    m = 9
    x = rng.normal(size=(m, 4))
    k_mm = (x @ x.T) ** 2 + 1e-3 * np.eye(m)
    rows, y = rng.normal(size=(120, m)), rng.normal(size=120)
    results = []
    for conv in (np.asarray, to_other):
        chol = gp.cholesky_with_jitter(conv(k_mm), 1e-10)
        left, right = gp.StreamingQR(m), gp.StreamingQR(m)
        left.add_rows(chol.T, conv(np.zeros(m)))
        for start in range(0, 60, 17):
            left.add_rows(
                conv(rows[start : start + 17][: 60 - start]),
                conv(y[start : start + 17][: 60 - start]),
            )
        right.add_rows(conv(rows[60:]), conv(y[60:]))
        left.merge(right)
        resumed = gp.StreamingQR.from_factors(left.r, left.qtb, left.residual)
        sigma = conv(np.ones(120))
        results.append(
            (
                left.solve(),
                resumed.solve(),
                left.residual,
                gp.log_marginal_likelihood(left, chol, sigma),
                left.r,
            )
        )
    (a_np, b_np, res_np, lml_np, r_np), (a_s, b_s, res_s, lml_s, r_s) = results
    close(a_s, a_np)
    close(b_s, a_np)
    assert res_s == pytest.approx(res_np, rel=1e-10)
    assert lml_s == pytest.approx(lml_np, rel=1e-10)
    # R is unique up to the signs of its rows: R^T R agrees
    r_s = backend.to_numpy(r_s)
    np.testing.assert_allclose(r_s.T @ r_s, r_np.T @ r_np, rtol=1e-10, atol=1e-10)
    # the prior-whitened accumulator solves the same problem in every namespace
    for conv in (np.asarray, to_other):
        chol = gp.cholesky_with_jitter(conv(k_mm), 1e-10)
        white = gp.StreamingQR(m, prior=chol)
        white.add_rows(conv(rows), conv(y))
        close(white.solve(), a_np)
        r_w = backend.to_numpy(white.r)
        np.testing.assert_allclose(r_w.T @ r_w, r_np.T @ r_np, rtol=1e-10, atol=1e-10)
        assert gp.log_marginal_likelihood(white, None, conv(np.ones(120))) == pytest.approx(
            lml_np, rel=1e-10
        )


def test_cholesky_failure_is_reported_on_other_namespaces(space):
    conv, xp = space
    with pytest.raises(NumericalError, match="not positive definite"):
        gp.cholesky_with_jitter(conv(-np.eye(3)), 0.0)


def test_variances_on_other_namespaces(alloy, space):
    conv, xp = space
    desc, model, _ = alloy
    rows = design.design_rows(
        desc, model.sparse_features_, model.sparse_numbers_, model.delta_, model.zeta, virial=False
    )["forces"]
    rows = rows.reshape(-1, len(model.coefficients_))
    close(
        uncertainty.sor_variance(conv(rows), conv(model.r_factor_)),
        uncertainty.sor_variance(rows, model.r_factor_),
    )
    close(
        uncertainty.nystrom_variance(conv(rows), conv(model.sparse_cholesky_)),
        uncertainty.nystrom_variance(rows, model.sparse_cholesky_),
    )
    delta = {29: 1.0, 79: 1.0}
    local, total = uncertainty.energy_prior_variance(
        conv(desc.features), desc.numbers, model.zeta, delta
    )
    local_np, total_np = uncertainty.energy_prior_variance(
        desc.features, desc.numbers, model.zeta, delta
    )
    close(local, local_np)
    assert total == pytest.approx(total_np, rel=1e-12)
    close(
        uncertainty.force_prior_variance(desc, model.zeta, delta, xp),
        uncertainty.force_prior_variance(desc, model.zeta, delta),
    )
    close(
        uncertainty.virial_prior_variance(desc, model.zeta, delta, xp),
        uncertainty.virial_prior_variance(desc, model.zeta, delta),
    )


# ------------------------------------------------------------ whole estimator
@pytest.fixture
def strict_device(monkeypatch):
    """``device="cuda"`` runs on array_api_strict: every line of the device path."""
    real = backend.resolve_device

    def fake(device, owner="gapkit"):
        if device == "cuda":
            return backend.Backend("cuda", xps)
        return real(device, owner)

    monkeypatch.setattr(gapkit.estimator, "resolve_device", fake)
    monkeypatch.setattr(gapkit.calculator, "resolve_device", fake)


def fit_pair(frames, **params):
    kwargs = dict(n_sparse=40, random_state=0, **params)
    cpu = GAPRegressor(small_soap(), device="cpu", **kwargs).fit(frames)
    dev = GAPRegressor(small_soap(), device="cuda", **kwargs).fit(frames)
    return cpu, dev


def assert_rel(actual, desired, rtol=1e-10):
    """Relative agreement in norm (coefficients cancel, so small ones carry
    absolute, not relative, rounding)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert np.linalg.norm(actual - desired) <= rtol * np.linalg.norm(desired)


def assert_same_model(cpu, dev, frames):
    assert dev.device_ == "cuda" and cpu.device_ == "cpu"
    assert_rel(dev.coefficients_, cpu.coefficients_)
    assert dev.log_marginal_likelihood_ == pytest.approx(cpu.log_marginal_likelihood_, rel=1e-10)
    ref = cpu.predict_all(frames, return_std=True)
    got = dev.predict_all(frames, return_std=True)
    for r, g in zip(ref, got, strict=True):
        for key in (
            "energy",
            "energies",
            "forces",
            "stress",
            "energy_std",
            "energies_std",
            "forces_std",
            "stress_std",
        ):
            np.testing.assert_allclose(
                g[key], r[key], rtol=1e-10, atol=1e-10 * np.max(np.abs(r[key])), err_msg=key
            )
            assert isinstance(g[key], (float, np.ndarray))


def test_estimator_device_path_matches_cpu(strict_device, cuau_frames):
    cpu, dev = fit_pair(cuau_frames[:8])
    assert_same_model(cpu, dev, cuau_frames[8:10])
    # partial_fit folds new rows on the device too
    cpu.partial_fit(cuau_frames[10:])
    dev.partial_fit(cuau_frames[10:])
    assert_rel(dev.coefficients_, cpu.coefficients_)


def test_estimator_device_path_optimize(strict_device, cuau_frames):
    cpu, dev = fit_pair(cuau_frames[:6], optimize=["sigma_force"])
    assert dev.hyperparameters_["sigma_force"] == pytest.approx(
        cpu.hyperparameters_["sigma_force"], rel=1e-6
    )
    assert_rel(dev.coefficients_, cpu.coefficients_, rtol=1e-6)


def test_device_is_validated(cuau_frames):
    with pytest.raises(InvalidParameterError, match="'device'"):
        GAPRegressor(small_soap(), device="gpu").fit(cuau_frames[:2])
    with pytest.raises(InvalidParameterError, match="'device'"):
        backend.resolve_device("tpu")


@pytest.mark.skipif(CUDA, reason="a GPU is present")
def test_cuda_without_gpu_says_why(cuau_frames):
    with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
        GAPRegressor(small_soap(), n_sparse=10, device="cuda").fit(cuau_frames[:2])


def test_auto_says_what_it_chose(caplog, cuau_frames):
    with caplog.at_level(logging.INFO, logger="gapkit"):
        model = GAPRegressor(small_soap(), n_sparse=10, device="auto").fit(cuau_frames[:2])
    assert model.device_ == ("cuda" if CUDA else "cpu")
    assert "device='auto' chose the " + ("GPU" if CUDA else "CPU") in caplog.text


def test_index_add_fallback_matches_numpy():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, 50)
    values = rng.normal(size=(50, 3, 2))
    ref = np.zeros((7, 3, 2))
    np.add.at(ref, idx, values)
    close(backend.index_add(xps, on_strict(idx), on_strict(values), 7), ref, rtol=1e-13)
    np.testing.assert_allclose(backend.index_add(np, idx, values, 7), ref, rtol=1e-13)


# --------------------------------------------------------------------- GPU
@pytest.mark.gpu
@needs_gpu
def test_gpu_fit_and_predict_equal_cpu(cuau_frames):
    cpu, dev = fit_pair(cuau_frames[:8])
    assert_same_model(cpu, dev, cuau_frames[8:])


def test_calculator_device_option(strict_device, cuau_model, cuau_frames):
    atoms = cuau_frames[9].copy()
    atoms.calc = cuau_model.calculator(device="cuda", uncertainty=True)
    assert atoms.calc.device == "cuda" and cuau_model.device == "cpu"  # model untouched
    ref = cuau_model.predict_all([atoms], return_std=True)[0]
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=1e-10, atol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-12)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], ref["forces_std"], rtol=1e-10)
    with pytest.raises(InvalidParameterError, match="'device'"):
        cuau_model.calculator(device="gpu")
