"""The calibration report: reliability curve, metrics, plot and ``gapkit eval --uncertainty``."""

from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from ase.io import write
from scipy.special import ndtr, ndtri

from gapkit import GAPRegressor
from gapkit.cli import _calibration_source, _format_std_scales, main
from gapkit.metrics import calibration_metrics, reliability_curve

PNG = b"\x89PNG\r\n\x1a\n"


def gaussian_errors(n=20_000, seed=0):
    """Errors drawn with the stds they are reported with (calibrated)."""
    rng = np.random.default_rng(seed)
    stds = rng.uniform(0.05, 2.0, n)
    return rng.normal(0.0, stds), stds


def overconfident_curve(p, factor):
    """Observed coverage at expected ``p`` when the stds are ``factor`` times too small."""
    return 2 * ndtr(ndtri((1 + p) / 2) / factor) - 1


# ------------------------------------------------------------------ metrics
def test_calibrated_gaussian_errors():
    errors, stds = gaussian_errors()
    m = calibration_metrics(errors, stds)
    assert m["coverage_1sigma"] == pytest.approx(0.6827, abs=0.015)
    assert m["coverage_2sigma"] == pytest.approx(0.9545, abs=0.006)
    assert m["mean_z2"] == pytest.approx(1.0, abs=0.05)
    assert m["scale"] ** 2 == pytest.approx(m["mean_z2"])
    # sampling noise of the area is about 0.3 / sqrt(n) = 0.002
    assert 0 <= m["miscalibration_area"] < 0.01


def test_stds_three_times_too_small():
    errors, stds = gaussian_errors()
    expected, observed = reliability_curve(errors, stds / 3)
    analytic = overconfident_curve(expected, 3.0)
    # empirical CDF of z: within about 1.4 / sqrt(n) everywhere (DKW, 95 %)
    assert np.max(np.abs(observed - analytic)) < 0.015
    assert np.all(observed <= expected + 0.01)  # below the diagonal: overconfident
    m = calibration_metrics(errors, stds / 3)
    grid = (np.arange(100_000) + 0.5) / 100_000
    area = np.mean(np.abs(overconfident_curve(grid, 3.0) - grid))
    assert area > 0.25
    assert m["miscalibration_area"] == pytest.approx(area, abs=0.01)
    assert m["mean_z2"] == pytest.approx(9.0, rel=0.05)
    assert m["coverage_1sigma"] == pytest.approx(2 * ndtr(1 / 3) - 1, abs=0.015)


def test_stds_too_large_give_a_curve_above_the_diagonal():
    errors, stds = gaussian_errors(n=5000)
    expected, observed = reliability_curve(errors, stds * 3)
    assert np.all(observed >= expected - 0.02)
    assert np.max(np.abs(observed - overconfident_curve(expected, 1 / 3))) < 0.03
    assert calibration_metrics(errors, stds * 3)["miscalibration_area"] > 0.2


def test_reliability_curve_grid_and_area():
    errors, stds = gaussian_errors(n=500, seed=1)
    expected, observed = reliability_curve(errors, stds, n_points=50)
    assert expected.shape == observed.shape == (50,)
    np.testing.assert_allclose(expected, (np.arange(50) + 0.5) / 50)
    assert np.all(np.diff(observed) >= 0) and 0 <= observed[0] and observed[-1] <= 1
    # the metric is the midpoint rule on the default grid of the same curve
    expected, observed = reliability_curve(errors, stds)
    area = calibration_metrics(errors, stds)["miscalibration_area"]
    assert area == pytest.approx(np.mean(np.abs(observed - expected)))
    # by hand: every |z| = 1, inside the central intervals from p = 0.6827 on
    _, obs = reliability_curve(np.ones(4), np.ones(4), n_points=4)
    np.testing.assert_array_equal(obs, [0, 0, 0, 1])  # p = 0.125, 0.375, 0.625, 0.875
    assert np.isnan(reliability_curve([], [])[1]).all()


def test_reliability_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="same number of values; got 3 errors and 2 stds"):
        reliability_curve(np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match="n_points must be a positive integer"):
        reliability_curve(np.zeros(3), np.ones(3), n_points=0)
    with pytest.raises(ValueError, match="same number of values"):
        calibration_metrics(np.zeros((2, 3)), np.ones(5))


def test_calibration_metrics_keys_spearman_and_empty_input():
    errors, stds = gaussian_errors(n=200)
    m = calibration_metrics(errors, stds)
    assert set(m) == {
        "coverage_1sigma",
        "coverage_2sigma",
        "mean_z2",
        "spearman",
        "miscalibration_area",
        "scale",
    }
    ranked = calibration_metrics(-2 * stds, stds)  # |error| grows with the std
    assert ranked["spearman"] == pytest.approx(1.0)
    assert ranked["mean_z2"] == pytest.approx(4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning from scipy
        assert np.isnan(calibration_metrics(np.ones(5), np.ones(5))["spearman"])
    assert all(np.isnan(v) for v in calibration_metrics([], []).values())


# ------------------------------------------------------------------ plot
@pytest.mark.parametrize("n", [300, 6000])  # points, and a hexbin density above 5000
def test_calibration_plot_writes_a_png(tmp_path, n):
    pytest.importorskip("matplotlib")
    from gapkit.plots import calibration_plot

    errors, stds = gaussian_errors(n=n)
    errors[:3] = 0.0  # nothing to show on log axes, but no failure
    path = tmp_path / "calibration.png"
    calibration_plot(errors, stds / 2, path, "energy (eV)")  # the old positional call
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="no errors to plot"):
        calibration_plot([], [], tmp_path / "empty.png")


def test_binned_rms_uses_equal_count_quantile_bins():
    from gapkit.plots import _binned_rms

    stds = np.repeat([1.0, 2.0, 4.0, 8.0], 25)[::-1].copy()
    rms_std, rms_err = _binned_rms(3 * stds, stds, 4)
    np.testing.assert_allclose(rms_std, [1, 2, 4, 8])
    np.testing.assert_allclose(rms_err, [3, 6, 12, 24])
    assert len(_binned_rms(np.ones(3), np.ones(3), 10)[0]) == 3


# ------------------------------------------------------------------ CLI helpers
@pytest.mark.parametrize(
    "scale, calibration, on, expected_scales, expected_source",
    [
        (
            {"energy": 2.5, "forces": 2.5, "stress": 2.5},
            {"method": "validation"},
            "val.xyz",
            "energy 2.5, forces 2.5, stress 2.5",
            "fitted on val.xyz by --calibrate",
        ),
        (
            {"energy": 1.5, "forces": 3.25, "stress": 3.25},
            {"method": "cross-validation", "n_folds": 5, "borrowed": {"stress": "forces"}},
            None,
            "energy 1.5, forces 3.25, stress 3.25",
            "fitted by 5-fold cross-validation over the training structures; stress: no "
            "held-out labels, scale of forces",
        ),
        (
            {"energy": 2.0, "forces": 1.0, "stress": 1.0},
            {"method": "validation", "kept": ["stress"]},
            None,
            "energy 2, forces 1, stress 1",
            "fitted on validation structures (calibrate); stress: previous scale kept",
        ),
        (
            {"energy": 1.0, "forces": 1.0, "stress": 1.0},
            {"method": "none"},
            None,
            "energy 1, forces 1, stress 1",
            "unscaled: the GP's own stds",
        ),
        (
            {"energy": 2.0, "forces": 2.0, "stress": 2.0},
            {"method": "unknown"},
            None,
            "energy 2, forces 2, stress 2",
            "how they were obtained is not recorded",
        ),
    ],
)
def test_std_scale_helpers_describe_the_scales(
    scale, calibration, on, expected_scales, expected_source
):
    model = SimpleNamespace(std_scale_=scale, calibration_=calibration)
    assert _format_std_scales(model) == expected_scales
    assert expected_source in _calibration_source(model, on)


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, cu_data):
    from conftest import small_soap

    train, test = cu_data
    where = tmp_path_factory.mktemp("calibration")
    model = GAPRegressor(small_soap(r_cut=3.0, n_max=3, l_max=2), n_sparse=20, random_state=0)
    model.fit(train[:4]).save(where / "cu.gap")
    write(where / "test.xyz", test[:3])
    write(where / "val.xyz", train[4:7])
    return where


def _row(out: str, name: str) -> list[str]:
    line = next(x for x in out.splitlines() if x.startswith(name))
    return line[len(name) :].split()


def test_eval_uncertainty_prints_the_calibration_table(tiny_model, capsys):
    from gapkit import load
    from gapkit._validation import read_labels
    from gapkit.io import read_structures

    png = tiny_model / "calibration.png"
    argv = ["eval", str(tiny_model / "cu.gap"), str(tiny_model / "test.xyz"), "--uncertainty"]
    assert main([*argv, "--plot-calibration", str(png), "-q"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"uncertainty: DTC variance, std scales? \S", out)
    assert re.search(r"quantity\s+n\s+in 1σ\s+in 2σ\s+mean z²\s+Spearman\s+miscal\. area", out)
    assert png.read_bytes()[:8] == PNG

    model = load(tiny_model / "cu.gap")
    frames = read_structures(tiny_model / "test.xyz")
    labels = [read_labels(a, model.energy_key, model.forces_key, model.stress_key) for a in frames]
    pred = model.predict_all(frames, return_std=True)
    pairs = zip(pred, labels, strict=True)
    errors = np.concatenate([(p["forces"] - lab.forces).ravel() for p, lab in pairs])
    stds = np.concatenate([p["forces_std"].ravel() for p in pred])
    m = calibration_metrics(errors, stds)
    row = _row(out, "force components")
    assert int(row[0]) == errors.size == 3 * sum(len(a) for a in frames)
    keys = ("coverage_1sigma", "coverage_2sigma", "mean_z2", "spearman", "miscalibration_area")
    for cell, key in zip(row[1:], keys, strict=True):
        assert float(cell) == pytest.approx(m[key], abs=6e-4)
    per_atom = _row(out, "forces per atom (norm)")
    assert int(per_atom[0]) == errors.size // 3 and per_atom[1] == per_atom[2] == "—"
    assert per_atom[5] == "—" and np.isfinite(float(per_atom[4]))
    assert int(_row(out, "energies")[0]) == len(frames)
    assert int(_row(out, "stress components")[0]) == 6 * len(frames)

    # --calibrate: the header says where the scales come from
    assert main([*argv, "--calibrate", str(tiny_model / "val.xyz"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "std scales fitted on" in out
    assert f"fitted on {tiny_model / 'val.xyz'} by --calibrate" in out
