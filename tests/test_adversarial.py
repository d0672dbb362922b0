"""Regressions for what the adversarial review of issue 12 found (one test per finding)."""

from __future__ import annotations

import json
import os
import pickle
import stat

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write
from conftest import small_soap

from gapkit import GAPRegressor, load
from gapkit.active import IncrementalGAP, OnTheFlyLearner
from gapkit.cli import main
from gapkit.exceptions import (
    InvalidParameterError,
    InvalidStructureError,
    MissingLabelError,
    ModelFileError,
)
from gapkit.io import read_model_file, write_model_file


@pytest.fixture()
def model(cuau_frames):
    return GAPRegressor(small_soap(), n_sparse=15).fit(cuau_frames[:4])


def _craft(path, saved, edit):
    header, arrays = read_model_file(saved)
    edit(header, arrays)
    write_model_file(path, header, arrays)
    return path


# 1 — save never replaces a device, a FIFO or a file that is not a model
def test_save_refuses_non_regular_and_foreign_files(model, tmp_path, cuau_frames):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidParameterError, match="is not a regular file"):
        model.save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    data = tmp_path / "data.xyz"
    write(data, cuau_frames[:2])
    before = data.read_bytes()
    with pytest.raises(InvalidParameterError, match="exists and is not a gapkit model file"):
        model.save(data)
    assert data.read_bytes() == before
    model.save(tmp_path / "m.gap")
    model.save(tmp_path / "m.gap")  # a model may replace a model


# 2 — execution settings are never taken from a file
def test_stored_scheduler_and_n_jobs_are_ignored(model, tmp_path, cuau_frames):
    model.save(tmp_path / "m.gap")

    def edit(header, arrays):
        header["params"].update(scheduler="tcp://127.0.0.1:9", n_jobs=5000, verbose=True)

    loaded = load(_craft(tmp_path / "c.gap", tmp_path / "m.gap", edit))
    assert (loaded.scheduler, loaded.n_jobs, loaded.verbose) == (None, 1, False)
    np.testing.assert_array_equal(loaded.predict(cuau_frames[5:7]), model.predict(cuau_frames[5:7]))


# 3 — arrays a model does not have are refused unread; the total is bounded
def test_extra_arrays_are_refused(model, tmp_path):
    model.save(tmp_path / "m.gap")

    def edit(header, arrays):
        arrays["padding"] = np.zeros(1000)

    with pytest.raises(ModelFileError, match="arrays this model does not have .*'padding'"):
        load(_craft(tmp_path / "c.gap", tmp_path / "m.gap", edit))
    # several arrays, each within the limit, more than twice the limit in all
    crafted = write_model_file(tmp_path / "big.gap", {}, {f"a{k}": np.zeros(100) for k in range(3)})
    with pytest.raises(ModelFileError, match="300 elements in all, above twice the limit of 100"):
        read_model_file(crafted, max_elements=100)


# 4 — IncrementalGAP notices a model changed behind its back
def test_incremental_refuses_a_model_changed_outside(model, cuau_frames):
    inc = IncrementalGAP(model, cuau_frames[:4])
    inc.add_structures(cuau_frames[4:5])
    model.partial_fit(cuau_frames[5:6])
    with pytest.raises(InvalidParameterError, match="changed outside IncrementalGAP"):
        inc.add_structures(cuau_frames[6:7])
    with pytest.raises(InvalidParameterError, match="changed outside IncrementalGAP"):
        inc.add_sparse_points(model.sparse_features_[:1], model.sparse_numbers_[:1])


# 8 — versions are unique across processes (a pickled model keeps its own)
def test_calculator_on_an_unpickled_model_follows_updates(model, cuau_frames):
    twin = pickle.loads(pickle.dumps(model))
    assert twin.fitted_.version == model.fitted_.version and len(twin.fitted_.version) == 32
    atoms = cuau_frames[10].copy()
    atoms.calc = twin.calculator()
    old = atoms.get_potential_energy()
    twin.partial_fit(cuau_frames[4:9])
    assert atoms.get_potential_energy() != old
    assert atoms.get_potential_energy() == pytest.approx(twin.predict([atoms])[0], abs=1e-12)


# 9 — nothing is saved that load would refuse
@pytest.mark.filterwarnings("ignore:An input array is constant")
def test_calibrating_on_exact_labels_is_refused(model, cuau_frames):
    frames = [a.copy() for a in cuau_frames[5:7]]
    for a, e in zip(frames, model.predict(frames), strict=True):
        a.calc = None
        a.info["energy"] = e
    with pytest.raises(MissingLabelError, match="errors give no scale"):
        model.calibrate(frames, on="energy")
    with pytest.raises(InvalidParameterError, match=r"\|e0\| <= 1e9"):
        GAPRegressor(small_soap(), n_sparse=5, e0={"Cu": 1e200, "Au": 0.0}).fit(cuau_frames[:2])


# 11 — config_type read as an int by extxyz still meets its override
def test_integer_config_type_meets_its_override(cuau_frames, tmp_path):
    frames = []
    for k, a in enumerate(cuau_frames[:4]):
        b = a.copy()
        b.calc = a.calc
        b.info["config_type"] = 5 if k % 2 else "cold"
        frames.append(b)
    write(tmp_path / "t.xyz", frames)
    frames = read(tmp_path / "t.xyz", ":")
    assert isinstance(frames[1].info["config_type"], (int, np.integer))
    plain = GAPRegressor(small_soap(), n_sparse=10).fit(frames)
    noisy = GAPRegressor(small_soap(), n_sparse=10, config_type_sigma={"5": {"force": 10.0}})
    noisy.fit(frames)
    assert np.max(np.abs(noisy.coefficients_ - plain.coefficients_)) > 1e-6


# 13 — NumPy scalars (GridSearchCV over np.arange) survive save/load
def test_numpy_scalar_parameters_are_saved(cuau_frames, tmp_path):
    model = GAPRegressor(small_soap(n_max=np.int64(3)), n_sparse=np.int64(10), zeta=np.int64(4))
    model.fit(cuau_frames[:3]).save(tmp_path / "m.gap")
    loaded = load(tmp_path / "m.gap")
    assert loaded.n_sparse == 10 and loaded.descriptor.n_max == 3
    json.dumps(loaded.get_params(deep=False), default=str)


# 14 — a model that is replaced keeps its mode
def test_replaced_model_keeps_its_mode(model, tmp_path):
    path = tmp_path / "m.gap"
    model.save(path)
    os.chmod(path, 0o600)
    model.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# 6 — learn checks the model settings before the first reference call
@pytest.mark.parametrize(
    "model_spec, match",
    [
        ({"zeta": 0}, "'zeta' must be an integer between 1 and 64"),
        ({"sigma_force": "0.1"}, "'sigma_force' must be a positive finite number"),
        ({"descriptor": {"r_cut": 3.5, "n_max": 3, "l_max": 2, "species": ["Ni"]}}, "Cu"),
    ],
)
def test_learn_checks_the_model_before_any_reference_call(tmp_path, model_spec, match, capsys):
    config = {
        "mode": "otf",
        "structure": {"bulk": "Cu", "cubic": True},
        "steps": 2,
        "output": str(tmp_path / "o.xyz"),
        "model": model_spec,
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "c.json")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o.xyz").exists()


# 5 — pool mode counts rounds in total: running it again does not label more
def test_pool_rounds_count_in_total(tmp_path, cu_data, capsys):
    write(tmp_path / "pool.xyz", cu_data[0][:10])
    config = {
        "mode": "pool",
        "pool": str(tmp_path / "pool.xyz"),
        "initial": 2,
        "batch": 1,
        "rounds": 2,
        "output": str(tmp_path / "p.xyz"),
        "model": {"descriptor": {"r_cut": 3.5, "n_max": 3, "l_max": 2}, "n_sparse": 10},
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert main(["learn", str(tmp_path / "c.json")]) == 0
    first = len(read(tmp_path / "p.xyz", ":"))
    assert first == 4  # 2 initial + 2 rounds of 1
    assert main(["learn", str(tmp_path / "c.json")]) == 0
    assert len(read(tmp_path / "p.xyz", ":")) == first


# 10 — two runs on one data file cannot overlap; duplicated frames are refused
def test_otf_runs_on_one_file_are_exclusive(tmp_path):
    import fcntl

    data = tmp_path / "d.xyz"
    learner = OnTheFlyLearner(GAPRegressor(small_soap(), n_sparse=10), EMT(), data_path=data)
    with open(str(data) + ".lock", "a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        atoms = bulk("Cu", cubic=True)
        with pytest.raises(InvalidParameterError, match="another run is using"):
            learner.run(atoms, 2)
    assert not data.exists()


def test_otf_refuses_a_duplicated_frame(tmp_path):
    data = tmp_path / "d.xyz"
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.05, seed=0)
    learner = OnTheFlyLearner(
        GAPRegressor(small_soap(), n_sparse=10), EMT(), data_path=data, threshold=1e-9
    )
    learner.run(atoms.copy(), 2)
    frames = read(data, ":")
    assert len(frames) >= 2
    write(data, frames + frames[-1:])  # the last frame twice, as two overlapping runs did
    before = data.read_bytes()
    with pytest.raises(InvalidStructureError, match="has otf_step .* not after"):
        learner.run(atoms.copy(), 3)
    assert data.read_bytes() == before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": "0.1"}, "'threshold' must be a positive finite number"),
        ({"threshold": np.inf}, "'threshold' must be a positive finite number"),
        ({"checkpoint_interval": 0}, "'checkpoint_interval' must be an integer >= 1"),
        ({"min_interval": "5"}, "'min_interval' must be an integer >= 1"),
    ],
)
def test_otf_arguments_are_checked(tmp_path, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        OnTheFlyLearner(GAPRegressor(small_soap()), EMT(), data_path=tmp_path / "d.xyz", **kwargs)
    with pytest.raises(InvalidParameterError, match="'model' must be a GAPRegressor"):
        OnTheFlyLearner("x", EMT(), data_path=tmp_path / "d.xyz")


# the key ASE itself uses names the calculator result (extxyz energy=, forces=)
def test_explicit_key_equal_to_the_property_reads_the_calculator(cuau_frames):
    model = GAPRegressor(small_soap(), n_sparse=10, energy_key="energy", forces_key="forces")
    model.fit(cuau_frames[:3])
    assert model.n_observations_["energy"] == 3 and model.n_observations_["forces"] == 3 * 48


# eval -o and --plot on one path: the plot would overwrite the calibrated model
def test_eval_refuses_one_path_for_two_outputs(model, cuau_frames, tmp_path, capsys):
    model.save(tmp_path / "m.gap")
    write(tmp_path / "v.xyz", cuau_frames[6:8])
    same = str(tmp_path / "same.png")
    argv = [
        "eval",
        str(tmp_path / "m.gap"),
        str(tmp_path / "v.xyz"),
        "--calibrate",
        str(tmp_path / "v.xyz"),
        "-o",
        same,
        "--plot",
        same,
    ]
    assert main(argv) == 2
    assert "are the same file" in capsys.readouterr().err
    assert not os.path.exists(same)
