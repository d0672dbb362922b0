"""Command line: fit, eval (with plot), demo-style output and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import write

from gapkit import load
from gapkit.cli import build_model, main
from gapkit.exceptions import InvalidParameterError


@pytest.fixture
def files(tmp_path, cu_data):
    train, test = cu_data
    write(tmp_path / "train.xyz", train[:8])
    write(tmp_path / "test.xyz", test[:4])
    config = {"descriptor": {"r_cut": 3.5, "n_max": 4, "l_max": 3}, "n_sparse": 30,
              "random_state": 0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_fit_and_eval(files, capsys):
    model_path = files / "cu.gap"
    assert main(["fit", str(files / "train.xyz"), "--config", str(files / "config.json"),
                 "-o", str(model_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "read 8 structures" in out and "model written to" in out
    model = load(model_path)
    assert model.descriptor_.n_max == 4 and len(model.coefficients_) == 30

    plot = files / "parity.png"
    assert main(["eval", str(model_path), str(files / "test.xyz"), "--plot", str(plot),
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "force RMSE" in out and "meV/atom" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_label_keys(files, cu_data, capsys):
    frames = [a.copy() for a in cu_data[0][:4]]
    for a, ref in zip(frames, cu_data[0][:4], strict=True):
        a.info["dft_e"] = ref.get_potential_energy()
        a.arrays["dft_f"] = ref.get_forces()
    write(files / "custom.xyz", frames)
    assert main(["fit", str(files / "custom.xyz"), "--config", str(files / "config.json"),
                 "--energy-key", "dft_e", "--forces-key", "dft_f", "--stress-key", "none",
                 "-o", str(files / "m.gap"), "-q"]) == 0
    assert "4 energies, 384 force components and 0 virial" in capsys.readouterr().out


def test_errors_are_reported_not_raised(files, capsys):
    assert main(["eval", str(files / "absent.gap"), str(files / "test.xyz")]) == 2
    assert "No model file" in capsys.readouterr().err
    (files / "bad.json").write_text(json.dumps({"n_sparce": 3}))
    assert main(["fit", str(files / "train.xyz"), "--config", str(files / "bad.json"),
                 "-o", str(files / "x.gap")]) == 2
    assert "unknown parameter(s) n_sparce" in capsys.readouterr().err


def test_build_model_rejects_unknown_descriptor_keys():
    with pytest.raises(InvalidParameterError, match="descriptor parameter"):
        build_model({"descriptor": {"cutoff": 5}})


def test_eval_uncertainty_and_calibration(files, capsys):
    model_path = files / "cu.gap"
    main(["fit", str(files / "train.xyz"), "--config", str(files / "config.json"),
          "-o", str(model_path), "-q"])
    capsys.readouterr()
    out_model = files / "calibrated.gap"
    assert main(["eval", str(model_path), str(files / "test.xyz"), "--uncertainty",
                 "--calibrate", str(files / "train.xyz"), "-o", str(out_model),
                 "--plot-calibration", str(files / "calib.png"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "std scale factor fitted" in out and "Spearman" in out
    assert (files / "calib.png").exists()
    scale = load(out_model).std_scale_
    assert scale > 0 and scale != 1.0
    assert f"{scale:.4g}" in out


@pytest.mark.dask
def test_fit_on_local_dask_cluster(files, capsys):
    pytest.importorskip("dask.distributed")
    assert main(["fit", str(files / "train.xyz"), "--config", str(files / "config.json"),
                 "--scheduler", "local", "--workers", "2", "-o", str(files / "d.gap"),
                 "-q"]) == 0
    serial = files / "s.gap"
    main(["fit", str(files / "train.xyz"), "--config", str(files / "config.json"),
          "-o", str(serial), "-q"])
    a, b = load(files / "d.gap"), load(serial)
    assert np.abs(a.coefficients_ - b.coefficients_).max() < 1e-6 * np.abs(b.coefficients_).max()


def test_device_option(files, capsys):
    from gapkit.backend import cuda_available

    gpu, _ = cuda_available()
    model_path = files / "auto.gap"
    assert main(["fit", str(files / "train.xyz"), "--config", str(files / "config.json"),
                 "-o", str(model_path), "-q", "--device", "auto"]) == 0
    out = capsys.readouterr().out
    assert "device 'auto': using the " + ("GPU" if gpu else "CPU") in out
    assert ("on the CUDA" if gpu else "on the CPU") in out
    assert load(model_path).device == "auto"
    if not gpu:  # asking for the GPU where there is none: a clear error, no traceback
        code = main(["eval", str(model_path), str(files / "test.xyz"), "-q",
                     "--device", "cuda"])
        assert code != 0
        assert "device='cuda' was asked for but" in capsys.readouterr().err
