"""``gapkit learn`` in both modes, with EMT as the reference."""

from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read, write
from sklearn.base import clone

from gapkit import load
from gapkit.active.runner import reference_calculator
from gapkit.cli import main
from gapkit.config import build_model
from gapkit.exceptions import InvalidParameterError

SMALL_MODEL = {
    "descriptor": {"r_cut": 3.0, "n_max": 3, "l_max": 2},
    "n_sparse": 30,
    "sigma_energy": 0.001,
    "sigma_force": 0.02,
    "sigma_virial": 0.02,
    "random_state": 0,
}


@pytest.mark.parametrize("update", ["refit", "incremental"])
def test_learn_pool(tmp_path, cu_data, capsys, update):
    write(tmp_path / "pool.xyz", cu_data[0][:20])
    config = {
        "mode": "pool",
        "model": SMALL_MODEL,
        "reference": {"name": "emt"},
        "pool": str(tmp_path / "pool.xyz"),
        "initial": 3,
        "batch": 2,
        "rounds": 2,
        "output": str(tmp_path / "labelled.xyz"),
        "update": update,
    }
    if update == "incremental":
        config["n_sparse_add"] = 4
    (tmp_path / "pool.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "pool.json")]) == 0
    labelled = read(tmp_path / "labelled.xyz", ":")
    assert len(labelled) == 7
    assert len({a.info["pool_index"] for a in labelled}) == 7
    model = load(tmp_path / "labelled.gap")
    assert model.n_observations_["energy"] == 7
    assert "round 2" in capsys.readouterr().out
    if update == "incremental":
        # sparse points of the first fit plus up to 4 per labelled structure; the
        # model is the fit of all labelled data at those points (e0 of the first fit)
        first = clone(build_model(SMALL_MODEL)).fit(labelled[:3])
        assert (
            len(first.sparse_numbers_)
            < len(model.sparse_numbers_)
            <= (len(first.sparse_numbers_) + 4 * 4)
        )
        ref = (
            build_model(SMALL_MODEL)
            .set_params(e0=model.e0_)
            .fit(labelled, sparse_points=(model.sparse_features_, model.sparse_numbers_))
        )
        np.testing.assert_allclose(
            model.predict_forces(cu_data[1][:2])[0],
            ref.predict_forces(cu_data[1][:2])[0],
            rtol=0,
            atol=1e-8,
        )


def test_learn_otf(tmp_path, capsys):
    config = {
        "mode": "otf",
        "model": SMALL_MODEL,
        "reference": {"name": "emt"},
        "structure": {
            "bulk": "Cu",
            "crystalstructure": "fcc",
            "a": 3.61,
            "cubic": True,
            "repeat": [2, 2, 1],
        },
        "steps": 20,
        "timestep_fs": 2.0,
        "temperature_K": 600,
        "threshold": 0.05,
        "thermostat": "langevin",
        "output": str(tmp_path / "otf.xyz"),
    }
    (tmp_path / "otf.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "otf.json")]) == 0
    out = capsys.readouterr().out
    report = re.search(
        r"on-the-fly: 20 steps, (\d+) reference calls in this run, (\d+) "
        r"labelled structures",
        out,
    )
    assert report, out
    calls, n_labelled = int(report[1]), int(report[2])
    frames = read(tmp_path / "otf.xyz", ":")
    # a fresh run: the file holds exactly the reference calls it reports
    assert len(frames) == calls == n_labelled >= 1
    assert [a.info["otf_step"] for a in frames][0] == 0
    assert len(frames[0]) == 16  # the 2x2x1 cubic cell
    for atoms in frames:  # the labels are EMT's for exactly these positions
        fresh = atoms.copy()
        fresh.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), fresh.get_forces(), rtol=0, atol=1e-6)
    # the saved model has learned them: errors far below the size of the forces
    model = load(tmp_path / "otf.gap")
    assert model.n_observations_["energy"] == len(frames)
    labels = np.concatenate([a.get_forces() for a in frames])
    rmse = np.sqrt(np.mean((np.concatenate(model.predict_forces(frames)) - labels) ** 2))
    assert rmse < min(0.05, 0.3 * np.sqrt(np.mean(labels**2)))
    energies = np.array([a.get_potential_energy() for a in frames])
    assert np.abs(np.asarray(model.predict(frames)) - energies).max() / 16 < 0.002


def test_learn_bad_config(tmp_path, capsys):
    (tmp_path / "bad.json").write_text(json.dumps({"mode": "swim"}))
    assert main(["learn", str(tmp_path / "bad.json")]) == 2
    assert "'mode' must be 'otf' or 'pool'" in capsys.readouterr().err


def test_learn_pool_refuses_n_sparse_add_with_refit(tmp_path, cu_data, capsys):
    write(tmp_path / "pool.xyz", cu_data[0][:5])
    config = {
        "mode": "pool",
        "model": SMALL_MODEL,
        "pool": str(tmp_path / "pool.xyz"),
        "n_sparse_add": 4,
        "output": str(tmp_path / "labelled.xyz"),
    }
    (tmp_path / "pool.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "pool.json")]) != 0
    assert "'n_sparse_add' is used with" in capsys.readouterr().err
    assert not (tmp_path / "labelled.xyz").exists()  # refused before any reference call


# --------------------------------------------------------- config validation

OTF = {"mode": "otf", "model": SMALL_MODEL, "structure": {"bulk": "Cu", "cubic": True}, "steps": 3}
POOL = {"mode": "pool", "model": SMALL_MODEL, "initial": 2, "batch": 1, "rounds": 1}


def _learn(tmp_path, config, capsys):
    config = {"output": str(tmp_path / "out.xyz"), **config}
    (tmp_path / "c.json").write_text(json.dumps(config))
    code = main(["learn", str(tmp_path / "c.json")])
    return code, capsys.readouterr().err


BULK_KEYS = "crystalstructure, a, b, c, alpha, covera, u, orthorhombic, cubic, basis, repeat"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"structure": None}, "mode 'otf' needs 'structure'"),
        (
            {"structure": {"bulk": "Cu", "bogus": 1}},
            f"unknown key(s) 'bogus' in 'structure'; allowed: bulk, {BULK_KEYS}.",
        ),
        ({"structure": {"bulk": "Cu", "repeat": [2, 2]}}, "'repeat' must be three integers"),
        ({"structure": {"bulk": "Cu", "a": "big"}}, "'structure': ase.build.bulk"),
        ({"structure": 5}, "'structure' must be a file name or"),
        ({"temperature_K": "hot"}, "'temperature_K' must be a finite number >= 0 (K); got 'hot'."),
        ({"temperature_K": -5}, "'temperature_K' must be a finite number >= 0 (K); got -5."),
        (
            {"temperature_K": float("nan")},
            "'temperature_K' must be a finite number >= 0 (K); got nan",
        ),
        ({"steps": "many"}, "'steps' must be an integer >= 0; got 'many'."),
        ({"steps": 2.5}, "'steps' must be an integer >= 0; got 2.5."),
        ({"timestep_fs": 0}, "'timestep_fs' must be a finite number > 0 (fs); got 0."),
        ({"threshold": "low"}, "'threshold' must be a finite number > 0; got 'low'."),
        ({"thermostat": "langevin", "friction": "x"}, "'friction' must be a finite number >= 0"),
        ({"friction": 0.1}, '\'friction\' is used with "thermostat": "langevin" only'),
        ({"thermostat": "berendsen"}, "'thermostat' must be 'nve' or 'langevin'"),
        ({"seed": "x"}, "'seed' must be an integer >= 0; got 'x'."),
        ({"seed": True}, "'seed' must be an integer >= 0; got True."),
        ({"n_sparse_add": -1}, "'n_sparse_add' must be an integer >= 0; got -1."),
        ({"relative": "yes"}, "'relative' must be true or false; got 'yes'."),
        (
            {"reference": {"name": "emt", "foo": 1}},
            "unknown key(s) 'foo' in 'reference' (emt); allowed: name, asap_cutoff.",
        ),
        ({"reference": "emt"}, "'reference' must be a table such as"),
        ({"model": "small"}, "'model' must be a table of GAPRegressor parameters"),
        ({"color": "red"}, "unknown key(s) 'color'."),
    ],
)
def test_learn_otf_config_errors(tmp_path, capsys, change, message):
    config = {**OTF, **change}
    config = {k: v for k, v in config.items() if v is not None}
    code, err = _learn(tmp_path, config, capsys)
    assert code == 2
    assert err.startswith("gapkit learn: error: learn config") and message in err, err
    assert not (tmp_path / "out.xyz").exists()  # refused before any reference call


@pytest.mark.parametrize(
    "change, message",
    [
        ({"initial": "five"}, "'initial' must be an integer >= 1; got 'five'."),
        ({"initial": 0}, "'initial' must be an integer >= 1; got 0."),
        ({"batch": "two"}, "'batch' must be an integer >= 1; got 'two'."),
        ({"rounds": -1}, "'rounds' must be an integer >= 0; got -1."),
        ({"seed": 1.5}, "'seed' must be an integer >= 0; got 1.5."),
        (
            {"update": "incremental", "n_sparse_add": "4"},
            "'n_sparse_add' must be an integer >= 0; got '4'.",
        ),
    ],
)
def test_learn_pool_config_errors(tmp_path, cu_data, capsys, change, message):
    write(tmp_path / "pool.xyz", cu_data[0][:5])
    code, err = _learn(tmp_path, {**POOL, "pool": str(tmp_path / "pool.xyz"), **change}, capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out.xyz").exists()


def test_learn_input_files_are_checked(tmp_path, capsys):
    code, err = _learn(tmp_path, {**POOL, "pool": str(tmp_path / "absent.xyz")}, capsys)
    assert code == 2 and f"'pool': no file at {str(tmp_path / 'absent.xyz')!r}" in err
    code, err = _learn(tmp_path, {**POOL}, capsys)
    assert code == 2 and "mode 'pool' needs 'pool'" in err
    code, err = _learn(tmp_path, {**OTF, "structure": str(tmp_path / "absent.xyz")}, capsys)
    assert code == 2 and f"'structure': no file at {str(tmp_path / 'absent.xyz')!r}" in err
    (tmp_path / "garbage.xyz").write_text("3\nnot a comment\nthis is not a structure\n")
    code, err = _learn(tmp_path, {**OTF, "structure": str(tmp_path / "garbage.xyz")}, capsys)
    assert code == 2
    assert f"'structure': cannot read structures from {str(tmp_path / 'garbage.xyz')!r}" in err
    assert not (tmp_path / "out.xyz").exists()


def test_tblite_reference_rejects_keys_tblite_would_ignore(monkeypatch):
    class TBLite:  # stands in for tblite.ase.TBLite, which stores any keyword silently
        default_parameters = {"method": "GFN2-xTB", "charge": None, "accuracy": 1.0, "verbosity": 1}

        def __init__(self, **kwargs):
            self.parameters = kwargs

    module = types.ModuleType("tblite.ase")
    module.TBLite = TBLite
    monkeypatch.setitem(sys.modules, "tblite", types.ModuleType("tblite"))
    monkeypatch.setitem(sys.modules, "tblite.ase", module)
    with pytest.raises(
        InvalidParameterError,
        match=re.escape(
            "unknown key(s) 'methd' in 'reference' (tblite); "
            "allowed: name, method, charge, accuracy, verbosity."
        ),
    ):
        reference_calculator({"name": "tblite", "methd": "GFN2-xTB"})
    calc = reference_calculator({"name": "tblite", "accuracy": 0.1})
    assert calc.parameters == {"accuracy": 0.1, "method": "GFN1-xTB", "verbosity": 0}


def _model_file(tmp_path, cu_data):
    path = tmp_path / "model.gap"
    build_model(SMALL_MODEL).fit(cu_data[0][:3]).save(path)
    return path


@pytest.mark.parametrize("mode", ["pool", "otf"])
def test_learn_output_that_is_not_a_run_is_left_alone(tmp_path, cu_data, capsys, mode):
    write(tmp_path / "pool.xyz", cu_data[0][:6])
    model = _model_file(tmp_path, cu_data)
    foreign = tmp_path / "train.xyz"
    write(foreign, cu_data[0][:3])  # extended XYZ without pool_index / otf_step
    base = {**POOL, "pool": str(tmp_path / "pool.xyz")} if mode == "pool" else OTF
    for target in (model, foreign):
        before = target.read_bytes()
        code, err = _learn(
            tmp_path,
            {**base, "output": str(target), "model_output": str(tmp_path / "new.gap")},
            capsys,
        )
        assert code == 2
        assert (
            f"{str(target)!r} does not look like an extended-XYZ data file of a previous run" in err
        ), err
        assert target.read_bytes() == before
    assert not (tmp_path / "new.gap").exists()


def test_learn_model_output_is_checked_before_the_work(tmp_path, cu_data, capsys):
    write(tmp_path / "pool.xyz", cu_data[0][:6])
    config = {**POOL, "pool": str(tmp_path / "pool.xyz")}
    code, err = _learn(tmp_path, {**config, "model_output": "/nonexistent/dir/m.gap"}, capsys)
    assert code == 2 and "cannot write '/nonexistent/dir/m.gap': directory" in err
    before = (tmp_path / "pool.xyz").read_bytes()
    code, err = _learn(tmp_path, {**config, "model_output": str(tmp_path / "pool.xyz")}, capsys)
    assert code == 2 and "pool.xyz' exists and is not a gapkit model file" in err
    assert (tmp_path / "pool.xyz").read_bytes() == before
    code, err = _learn(tmp_path, {**config, "output": str(tmp_path / "x.gap")}, capsys)
    assert (
        code == 2
        and "'output' (the labelled structures) and 'model_output' are the same file" in err
    )
    code, err = _learn(
        tmp_path,
        {**config, "output": "/nonexistent/dir/d.xyz", "model_output": str(tmp_path / "m.gap")},
        capsys,
    )
    assert code == 2 and "cannot write '/nonexistent/dir/d.xyz': directory" in err
    assert not (tmp_path / "out.xyz").exists()


def test_learn_pool_resume_refuses_a_damaged_output(tmp_path, cu_data, capsys):
    write(tmp_path / "pool.xyz", cu_data[0][:8])
    config = {**POOL, "pool": str(tmp_path / "pool.xyz"), "rounds": 1}
    assert _learn(tmp_path, config, capsys)[0] == 0
    assert len(read(tmp_path / "out.xyz", ":")) == 3
    lines = (tmp_path / "out.xyz").read_text().splitlines(keepends=True)
    per = int(lines[0]) + 2  # lines of frame 1
    lines[per + 4] = "Cu 1.0 oops 2.0\n"  # frame 2, line per + 5
    (tmp_path / "out.xyz").write_text("".join(lines))
    before = (tmp_path / "out.xyz").read_bytes()
    code, err = _learn(tmp_path, config, capsys)
    assert code == 2
    assert f"is damaged in frame 2 (frames counted from 1), line {per + 5}" in err, err
    assert (tmp_path / "out.xyz").read_bytes() == before
