"""``gapkit learn`` in both modes, with EMT as the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read, write
from sklearn.base import clone

from gapkit import load
from gapkit.cli import build_model, main

SMALL_MODEL = {"descriptor": {"r_cut": 3.0, "n_max": 3, "l_max": 2}, "n_sparse": 30,
               "sigma_energy": 0.001, "sigma_force": 0.02, "sigma_virial": 0.02,
               "random_state": 0}


@pytest.mark.parametrize("update", ["refit", "incremental"])
def test_learn_pool(tmp_path, cu_data, capsys, update):
    write(tmp_path / "pool.xyz", cu_data[0][:20])
    config = {"mode": "pool", "model": SMALL_MODEL, "reference": {"name": "emt"},
              "pool": str(tmp_path / "pool.xyz"), "initial": 3, "batch": 2, "rounds": 2,
              "output": str(tmp_path / "labelled.xyz"), "update": update}
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
        assert len(first.sparse_numbers_) < len(model.sparse_numbers_) <= (
            len(first.sparse_numbers_) + 4 * 4)
        ref = build_model(SMALL_MODEL).set_params(e0=model.e0_).fit(
            labelled, sparse_points=(model.sparse_features_, model.sparse_numbers_))
        np.testing.assert_allclose(model.predict_forces(cu_data[1][:2])[0],
                                   ref.predict_forces(cu_data[1][:2])[0], rtol=0, atol=1e-8)


def test_learn_otf(tmp_path, capsys):
    config = {"mode": "otf", "model": SMALL_MODEL, "reference": {"name": "emt"},
              "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61, "cubic": True,
                            "repeat": [2, 2, 1]},
              "steps": 20, "timestep_fs": 2.0, "temperature_K": 600, "threshold": 0.05,
              "thermostat": "langevin", "output": str(tmp_path / "otf.xyz")}
    (tmp_path / "otf.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "otf.json")]) == 0
    out = capsys.readouterr().out
    assert "on-the-fly: 20 steps" in out
    assert len(read(tmp_path / "otf.xyz", ":")) >= 1
    assert (tmp_path / "otf.gap").exists()


def test_learn_bad_config(tmp_path, capsys):
    (tmp_path / "bad.json").write_text(json.dumps({"mode": "swim"}))
    assert main(["learn", str(tmp_path / "bad.json")]) == 2
    assert "'mode' must be 'otf' or 'pool'" in capsys.readouterr().err


def test_learn_pool_refuses_n_sparse_add_with_refit(tmp_path, cu_data, capsys):
    write(tmp_path / "pool.xyz", cu_data[0][:5])
    config = {"mode": "pool", "model": SMALL_MODEL, "pool": str(tmp_path / "pool.xyz"),
              "n_sparse_add": 4, "output": str(tmp_path / "labelled.xyz")}
    (tmp_path / "pool.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "pool.json")]) != 0
    assert "'n_sparse_add' is used with" in capsys.readouterr().err
    assert not (tmp_path / "labelled.xyz").exists()  # refused before any reference call
