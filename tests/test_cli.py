"""Command line: fit, eval (with plot), demo-style output and errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from ase.io import write

import gapkit
from gapkit import GAPRegressor, load
from gapkit.cli import main
from gapkit.datasets import load_cu_emt


@pytest.fixture
def files(tmp_path, cu_data):
    train, test = cu_data
    write(tmp_path / "train.xyz", train[:8])
    write(tmp_path / "test.xyz", test[:4])
    config = {
        "descriptor": {"r_cut": 3.5, "n_max": 4, "l_max": 3},
        "n_sparse": 30,
        "random_state": 0,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_fit_and_eval(files, capsys):
    model_path = files / "cu.gap"
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "config.json"),
                "-o",
                str(model_path),
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "read 8 structures" in out and "model written to" in out
    model = load(model_path)
    assert model.descriptor_.n_max == 4 and len(model.coefficients_) == 30

    plot = files / "parity.png"
    assert main(["eval", str(model_path), str(files / "test.xyz"), "--plot", str(plot), "-q"]) == 0
    out = capsys.readouterr().out
    assert "force RMSE" in out and "meV/atom" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_label_keys(files, cu_data, capsys):
    frames = [a.copy() for a in cu_data[0][:4]]
    for a, ref in zip(frames, cu_data[0][:4], strict=True):
        a.info["dft_e"] = ref.get_potential_energy()
        a.arrays["dft_f"] = ref.get_forces()
    write(files / "custom.xyz", frames)
    assert (
        main(
            [
                "fit",
                str(files / "custom.xyz"),
                "--config",
                str(files / "config.json"),
                "--energy-key",
                "dft_e",
                "--forces-key",
                "dft_f",
                "-o",
                str(files / "m.gap"),
                "-q",
            ]
        )
        == 0
    )
    assert "4 energies, 384 force components and 0 virial" in capsys.readouterr().out


def test_label_key_typo_is_an_error(files, cu_data, capsys):
    """Issue 12, case 4: a mistyped key used to fit with no labels of that kind."""
    frames = [a.copy() for a in cu_data[0][:4]]
    for a, ref in zip(frames, cu_data[0][:4], strict=True):
        a.info["dft_e"] = ref.get_potential_energy()
        a.arrays["dft_f"] = ref.get_forces()
    write(files / "custom.xyz", frames)
    assert (
        main(
            [
                "fit",
                str(files / "custom.xyz"),
                "--config",
                str(files / "config.json"),
                "--energy-key",
                "dft_e",
                "--forces-key",
                "dft_force",
                "-o",
                str(files / "m.gap"),
                "-q",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "forces_key='dft_force' is not in atoms.arrays of any structure" in err
    assert "dft_f" in err and not (files / "m.gap").exists()


def test_errors_are_reported_not_raised(files, capsys):
    assert main(["eval", str(files / "absent.gap"), str(files / "test.xyz")]) == 2
    assert "No model file" in capsys.readouterr().err
    (files / "bad.json").write_text(json.dumps({"n_sparce": 3}))
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "bad.json"),
                "-o",
                str(files / "x.gap"),
            ]
        )
        == 2
    )
    assert "unknown parameter(s) n_sparce" in capsys.readouterr().err


def test_eval_uncertainty_and_calibration(files, capsys):
    model_path = files / "cu.gap"
    main(
        [
            "fit",
            str(files / "train.xyz"),
            "--config",
            str(files / "config.json"),
            "-o",
            str(model_path),
            "-q",
        ]
    )
    capsys.readouterr()
    out_model = files / "calibrated.gap"
    assert (
        main(
            [
                "eval",
                str(model_path),
                str(files / "test.xyz"),
                "--uncertainty",
                "--calibrate",
                str(files / "train.xyz"),
                "-o",
                str(out_model),
                "--plot-calibration",
                str(files / "calib.png"),
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "std scales fitted on" in out and "Spearman" in out
    assert (files / "calib.png").exists()
    scale = load(out_model).std_scale_["forces"]
    assert scale > 0 and scale != 1.0
    assert f"forces {scale:.4g}" in out


@pytest.mark.dask
def test_fit_on_local_dask_cluster(files, capsys):
    pytest.importorskip("dask.distributed")
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "config.json"),
                "--scheduler",
                "local",
                "--workers",
                "2",
                "-o",
                str(files / "d.gap"),
                "-q",
            ]
        )
        == 0
    )
    serial = files / "s.gap"
    main(
        [
            "fit",
            str(files / "train.xyz"),
            "--config",
            str(files / "config.json"),
            "-o",
            str(serial),
            "-q",
        ]
    )
    a, b = load(files / "d.gap"), load(serial)
    assert np.abs(a.coefficients_ - b.coefficients_).max() < 1e-6 * np.abs(b.coefficients_).max()


def test_device_option(files, capsys):
    from gapkit.backend import cuda_available

    gpu, _ = cuda_available()
    model_path = files / "auto.gap"
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "config.json"),
                "-o",
                str(model_path),
                "-q",
                "--device",
                "auto",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "device 'auto': using the " + ("GPU" if gpu else "CPU") in out
    assert ("on the CUDA" if gpu else "on the CPU") in out
    assert load(model_path).device == "auto"
    if not gpu:  # asking for the GPU where there is none: a clear error, no traceback
        code = main(["eval", str(model_path), str(files / "test.xyz"), "-q", "--device", "cuda"])
        assert code != 0
        assert "device='cuda' was asked for but" in capsys.readouterr().err


@pytest.fixture
def no_fit(monkeypatch):
    """Make any fit (or calibration, prediction) fail loudly: the tests below check
    that an error comes before the work."""

    def fail(self, *args, **kwargs):
        raise AssertionError("the work started before the output path was checked")

    for name in ("fit", "calibrate", "predict_all"):
        monkeypatch.setattr(GAPRegressor, name, fail)


def test_fit_checks_the_output_path_before_fitting(files, capsys, no_fit):
    t0 = time.perf_counter()
    code = main(
        [
            "fit",
            str(files / "train.xyz"),
            "--config",
            str(files / "config.json"),
            "-o",
            "/nonexistent/dir/m.gap",
            "-q",
        ]
    )
    assert code == 2 and time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert (
        "gapkit fit: error: -o/--output: cannot write '/nonexistent/dir/m.gap': "
        "directory '/nonexistent/dir' does not exist." in err
    )
    assert ".tmp" not in err


def test_fit_does_not_overwrite_a_file_that_is_not_a_model(files, capsys, no_fit):
    before = (files / "test.xyz").read_bytes()
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "config.json"),
                "-o",
                str(files / "test.xyz"),
                "-q",
            ]
        )
        == 2
    )
    assert "test.xyz' exists and is not a gapkit model file" in capsys.readouterr().err
    assert (files / "test.xyz").read_bytes() == before


def test_fit_checks_the_test_file_before_fitting(files, capsys, no_fit):
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "config.json"),
                "-o",
                str(files / "m.gap"),
                "--test",
                str(files / "absent.xyz"),
                "-q",
            ]
        )
        == 2
    )
    assert "--test: no file at" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, cu_data):
    path = tmp_path_factory.mktemp("model") / "cu.gap"
    from conftest import small_soap

    GAPRegressor(small_soap(r_cut=3.0, n_max=3, l_max=2), n_sparse=20, random_state=0).fit(
        cu_data[0][:3]
    ).save(path)
    return path


@pytest.mark.parametrize(
    "option, target, message",
    [
        (["--plot"], "missing/p.png", "--plot: cannot write '{}': directory"),
        (
            ["--uncertainty", "--plot-calibration"],
            "missing/c.png",
            "--plot-calibration: cannot write '{}': directory",
        ),
        (["--calibrate", "train.xyz", "-o"], "missing/c.gap", "-o/--output: cannot write '{}'"),
        (["--plot"], "train.xyz", "--plot: '{}' exists and is not a PNG image"),
        (["--calibrate", "train.xyz", "-o"], "test.xyz", "'{}' exists and is not a gapkit model"),
    ],
)
def test_eval_checks_its_outputs_before_the_work(
    files, saved_model, capsys, no_fit, option, target, message
):
    option = [str(files / o) if o.endswith(".xyz") else o for o in option]
    target = files / target
    before = target.read_bytes() if target.exists() else None
    assert (
        main(["eval", str(saved_model), str(files / "test.xyz"), *option, str(target), "-q"]) == 2
    )
    assert message.format(target) in capsys.readouterr().err
    assert (target.read_bytes() if target.exists() else None) == before


def test_eval_output_needs_calibrate(files, saved_model, capsys):
    assert (
        main(["eval", str(saved_model), str(files / "test.xyz"), "-o", str(files / "c.gap")]) == 2
    )
    assert (
        "-o/--output writes the calibrated model and needs --calibrate" in capsys.readouterr().err
    )
    assert not (files / "c.gap").exists()


def test_demo_checks_the_output_path_before_fitting(capsys, no_fit):
    assert main(["demo", "-o", "/nonexistent/dir/demo.gap", "-q"]) == 2
    assert "cannot write '/nonexistent/dir/demo.gap'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, expected",
    [
        (MemoryError(), "gapkit eval: error: out of memory"),
        (
            PermissionError(13, "Permission denied", "m.gap"),
            "gapkit eval: error: [Errno 13] Permission denied: 'm.gap'",
        ),
        (OSError(5, "Input/output error"), "gapkit eval: error: [Errno 5] Input/output error"),
    ],
)
def test_errors_on_user_files_are_reported_without_traceback(
    files, saved_model, capsys, monkeypatch, error, expected
):
    def load(*args, **kwargs):
        raise error

    monkeypatch.setattr(gapkit.estimator, "load", load)
    assert main(["eval", str(saved_model), str(files / "test.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and "Traceback" not in err


def test_fit_is_reproducible_by_default(tmp_path, capsys):
    train, _ = load_cu_emt()
    write(tmp_path / "train.xyz", train[:5])
    config = {"descriptor": {"r_cut": 3.5, "n_max": 3, "l_max": 2}, "n_sparse": 20}
    (tmp_path / "config.json").write_text(json.dumps(config))
    fits = []
    for name in ("a.gap", "b.gap"):
        assert (
            main(
                [
                    "fit",
                    str(tmp_path / "train.xyz"),
                    "--config",
                    str(tmp_path / "config.json"),
                    "-o",
                    str(tmp_path / name),
                    "-q",
                ]
            )
            == 0
        )
        assert "seed 0 (sparse-point selection; --seed to change)" in capsys.readouterr().out
        fits.append(load(tmp_path / name))
    np.testing.assert_array_equal(fits[0].coefficients_, fits[1].coefficients_)
    np.testing.assert_array_equal(fits[0].sparse_features_, fits[1].sparse_features_)
    assert fits[0].random_state == 0

    assert (
        main(
            [
                "fit",
                str(tmp_path / "train.xyz"),
                "--config",
                str(tmp_path / "config.json"),
                "-o",
                str(tmp_path / "c.gap"),
                "--seed",
                "3",
                "-q",
            ]
        )
        == 0
    )
    assert "seed 3 (sparse-point selection" in capsys.readouterr().out
    assert load(tmp_path / "c.gap").random_state == 3
    (tmp_path / "seeded.json").write_text(json.dumps({**config, "random_state": 7}))
    assert (
        main(
            [
                "fit",
                str(tmp_path / "train.xyz"),
                "--config",
                str(tmp_path / "seeded.json"),
                "-o",
                str(tmp_path / "d.gap"),
                "-q",
            ]
        )
        == 0
    )
    assert "seed 7 (sparse-point selection" in capsys.readouterr().out
    assert load(tmp_path / "d.gap").random_state == 7


def test_invalid_toml_config_is_an_error_not_a_traceback(files, capsys):
    (files / "bad.toml").write_text("n_sparse = \n")
    assert (
        main(
            [
                "fit",
                str(files / "train.xyz"),
                "--config",
                str(files / "bad.toml"),
                "-o",
                str(files / "x.gap"),
            ]
        )
        == 2
    )
    assert "bad.toml': not valid TOML (Invalid value" in capsys.readouterr().err
    assert not os.path.exists(files / "x.gap")
