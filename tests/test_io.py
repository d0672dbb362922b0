"""Model files through ``GAPRegressor.save`` / ``gapkit.load``.

Round trips of every kind of fitted state (variance forms, calibration,
optimised hyperparameters, per-config-type noise, an electrostatic baseline),
the constructor parameters, what cannot be saved, and failed saves. The
envelope itself (checksums, sizes, schema versions, zip bombs) is tested in
test_model_file.py.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from conftest import labelled

import gapkit.io
from gapkit import SOAP, GAPRegressor, load
from gapkit.electrostatics import Ewald
from gapkit.exceptions import InvalidParameterError, InvalidStructureError, ModelFileError
from gapkit.io import SCHEMA_VERSION, read_structures
from gapkit.model import MODEL_ARRAYS

CHARGES = {"Cu": 0.1, "Au": -0.1}
HOT = {"hot": {"energy": 0.01, "force": 0.3}}
PREDICTED = {
    "energy",
    "energy_std",
    "energies",
    "energies_std",
    "forces",
    "forces_std",
    "stress",
    "stress_std",
}


@pytest.fixture(scope="module")
def alloy():
    """Eight neutral Cu4Au4 cells (8 atoms) labelled with EMT; every second one is
    rattled more and has config_type "hot"."""
    rng = np.random.default_rng(11)
    frames = []
    for k in range(8):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 1, 1))
        symbols = np.array(["Cu"] * 8)
        symbols[rng.choice(8, 4, replace=False)] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.rattle(0.15 if k % 2 else 0.05, seed=k)
        atoms = labelled(atoms)
        if k % 2:
            atoms.info["config_type"] = "hot"
        frames.append(atoms)
    return frames


def _model(**kwargs) -> GAPRegressor:
    soap = SOAP(r_cut=3.5, n_max=3, l_max=2, species=kwargs.pop("species", ["Cu", "Au"]))
    return GAPRegressor(soap, n_sparse=20, random_state=0, **kwargs)


def _same(a, b):
    """Equal nested tuples/lists of arrays (NaN equal to NaN)."""
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        np.testing.assert_array_equal(a, b, strict=True)


def assert_same(results_a: list[dict], results_b: list[dict]) -> None:
    """``predict_all(..., return_std=True)`` results identical, key by key."""
    assert len(results_a) == len(results_b)
    for ra, rb in zip(results_a, results_b, strict=True):
        assert set(ra) == set(rb) == PREDICTED
        for key in PREDICTED:
            np.testing.assert_array_equal(ra[key], rb[key], strict=True)


CASES = {
    "dtc": {"variance": "dtc"},
    "sor": {"variance": "sor"},
    "calibrated": {},
    "optimized": {"optimize": ["sigma_force"]},
    "config_type_sigma": {"config_type_sigma": HOT},
    "ewald": {"baseline": Ewald(charges=CHARGES)},
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, alloy, tmp_path_factory):
    """A fitted model of each kind, its file and its predictions (with stds)."""
    name = request.param
    model = _model(**CASES[name]).fit(alloy[:6])
    if name == "calibrated":
        model.calibrate(alloy[6:])
    path = tmp_path_factory.mktemp(name) / "model.gap"
    model.save(path)
    return SimpleNamespace(
        name=name, model=model, path=path, expected=model.predict_all(alloy[6:], return_std=True)
    )


@pytest.fixture(scope="module")
def small(alloy):
    return _model().fit(alloy[:4])


def test_round_trip_gives_identical_predictions(case, alloy):
    name, model = case.name, case.model
    loaded = load(case.path)
    assert_same(loaded.predict_all(alloy[6:], return_std=True), case.expected)

    for attr in (
        "sparse_features_",
        "sparse_numbers_",
        "delta_",
        "coefficients_",
        "r_factor_",
        "qtb_",
        "sparse_cholesky_",
    ):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(model, attr), strict=True)
    for attr in (
        "species_",
        "e0_",
        "hyperparameters_",
        "log_marginal_likelihood_",
        "std_scale_",
        "n_observations_",
        "random_state_",
        "residual_",
    ):
        assert getattr(loaded, attr) == getattr(model, attr), attr
    assert loaded.fitted_.variance == model.fitted_.variance == CASES[name].get("variance", "dtc")
    assert loaded.fitted_.noise == model.fitted_.noise
    assert loaded.descriptor_.get_params() == model.descriptor_.get_params()

    # the case's own state survived, and it is not the default
    if name == "calibrated":
        assert model.std_scale_ != 1.0
    if name == "optimized":
        assert model.hyperparameters_["sigma_force"] != model.sigma_force
    if name == "config_type_sigma":
        assert loaded.fitted_.noise.config_type_sigma == HOT
    if name == "ewald":
        assert type(loaded.baseline_) is Ewald and loaded.baseline_ is not model.baseline_
        assert loaded.baseline_.todict() == model.baseline_.todict()
    else:
        assert loaded.baseline_ is None


def test_every_prediction_method_after_load(tmp_path, alloy):
    """Each method, with and without stds (the Ewald baseline adds per-atom energies)."""
    model = _model(baseline=Ewald(charges=CHARGES)).fit(alloy[:4])
    model.save(tmp_path / "model.gap")
    loaded = load(tmp_path / "model.gap")
    frames = alloy[6:]
    for method in ("predict", "predict_local_energies", "predict_forces", "predict_stress"):
        for std in (False, True) if method == "predict" else (True,):
            _same(
                getattr(loaded, method)(frames, return_std=std),
                getattr(model, method)(frames, return_std=std),
            )


def test_loaded_parameters_equal_the_saved_ones(case, alloy):
    model = case.model
    loaded = load(case.path)
    saved, got = model.get_params(deep=False), loaded.get_params(deep=False)
    assert got.keys() == saved.keys()
    for key in saved.keys() - {"descriptor", "baseline"}:
        assert got[key] == saved[key], key
    assert type(got["descriptor"]) is SOAP
    assert got["descriptor"].get_params() == saved["descriptor"].get_params()
    if saved["baseline"] is None:
        assert got["baseline"] is None
    else:
        assert got["baseline"].todict() == saved["baseline"].todict()

    # parameters are not fitted state: changing them does not change a prediction
    loaded.set_params(zeta=2, variance="dtc" if model.variance == "sor" else "sor", jitter=0.1)
    assert_same(loaded.predict_all(alloy[6:], return_std=True), case.expected)


def test_loaded_descriptor_parameter_keeps_species_unset(tmp_path, alloy):
    model = _model(species=None).fit(alloy[:4])
    model.save(tmp_path / "model.gap")
    assert load(tmp_path / "model.gap").descriptor.species is None


def test_loaded_baseline_parameter_is_apart_from_the_fitted_one(tmp_path, alloy):
    model = _model(baseline=Ewald(charges=CHARGES)).fit(alloy[:4])
    model.save(tmp_path / "model.gap")
    loaded = load(tmp_path / "model.gap")
    before = loaded.predict(alloy[4:])
    loaded.baseline.set(charges={"Cu": 0.5, "Au": -0.5})  # as on the model that was saved
    np.testing.assert_array_equal(loaded.predict(alloy[4:]), before)


def test_partial_fit_after_load_equals_partial_fit_of_the_original(tmp_path, alloy):
    model = _model(config_type_sigma=HOT).fit(alloy[:4])
    path = tmp_path / "model.gap"
    model.save(path)
    loaded = load(path)
    model.partial_fit(alloy[4:])  # two of them are "hot"
    loaded.partial_fit(alloy[4:])
    scale = np.abs(model.coefficients_).max()
    np.testing.assert_allclose(
        loaded.coefficients_, model.coefficients_, rtol=0, atol=1e-12 * scale
    )
    assert loaded.n_observations_ == model.n_observations_
    assert loaded.log_marginal_likelihood_ == pytest.approx(
        model.log_marginal_likelihood_, rel=1e-12
    )
    # the per-config-type noise read from the file is what made them agree
    plain = load(path)
    plain.fitted_ = plain.fitted_.replace(
        noise=dataclasses.replace(plain.fitted_.noise, config_type_sigma=None)
    )
    plain.partial_fit(alloy[4:])
    assert np.abs(plain.coefficients_ - model.coefficients_).max() > 1e-6 * scale


def test_baseline_that_is_not_a_gapkit_calculator_cannot_be_saved(tmp_path, alloy, small):
    lj = LennardJones(sigma=2.3, epsilon=0.01, rc=4.0)
    model = _model(baseline=lj).fit(alloy[:4])
    assert model.baseline_ is lj  # used as given
    energies = model.predict(alloy[4:])
    assert np.all(np.isfinite(energies))
    assert not np.allclose(energies, small.predict(alloy[4:]))

    path = tmp_path / "model.gap"
    with pytest.raises(
        InvalidParameterError,
        match=r"^GAPRegressor\.save: the baseline LennardJones cannot be stored "
        r"in a model file .*never use pickle",
    ):
        model.save(path)
    assert list(tmp_path.iterdir()) == []

    sentinel = b"an existing file that must stay as it is\n"
    path.write_bytes(sentinel)
    with pytest.raises(InvalidParameterError, match="LennardJones"):
        model.save(path)
    assert path.read_bytes() == sentinel
    assert [p.name for p in tmp_path.iterdir()] == ["model.gap"]


def test_save_into_a_missing_directory(tmp_path, monkeypatch, small):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        InvalidParameterError,
        match=re.escape(
            "GAPRegressor.save: cannot write 'missing/model.gap': "
            "directory 'missing' does not exist."
        ),
    ):
        small.save("missing/model.gap")
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        InvalidParameterError, match=re.escape("GAPRegressor.save: output 'folder' is a directory.")
    ):
        small.save("folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    assert list((tmp_path / "folder").iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["022", "077"])
def test_file_mode_follows_the_umask(tmp_path, small, umask):
    old = os.umask(umask)
    try:
        small.save(tmp_path / "model.gap")
    finally:
        os.umask(old)
    assert (tmp_path / "model.gap").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    "error, raised, match",
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            OSError,
            r"GAPRegressor\.save: could not write '.*model\.gap': No space left on device",
        ),
        (RuntimeError("writer crashed"), RuntimeError, "^writer crashed$"),
    ],
    ids=["OSError", "RuntimeError"],
)
def test_failed_save_keeps_the_existing_file(tmp_path, small, monkeypatch, error, raised, match):
    path = tmp_path / "model.gap"
    small.save(path)
    before = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def write_array(fh, array, *args, **kwargs):
        calls.append(array.shape)
        if len(calls) == 3:  # midway: two arrays written, and part of the third
            fh.write(b"\x93NUMPY partial")
            raise error
        return real(fh, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_array)
    with pytest.raises(raised, match=match):
        small.save(path)
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.gap"]
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path).coefficients_, small.coefficients_)


def test_file_holds_no_pickle(tmp_path, small, monkeypatch):
    path = tmp_path / "model.gap"
    small.save(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert names == {"header.json", "header.sha256"} | {f"{n}.npy" for n in MODEL_ARRAYS}
        envelope = json.loads(zf.read("header.json"))
        for name in MODEL_ARRAYS:
            array = np.load(io.BytesIO(zf.read(f"{name}.npy")), allow_pickle=False)
            assert array.dtype in (np.float64, np.int64)
            assert envelope["arrays"][name]["shape"] == list(array.shape)
    assert envelope["format"] == "gapkit-model"
    assert envelope["schema_version"] == SCHEMA_VERSION
    assert set(envelope["state"]) == {"model", "params"}

    def no_pickle(*args, **kwargs):
        raise AssertionError("gapkit.load unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, no_pickle)
    np.testing.assert_array_equal(load(path).coefficients_, small.coefficients_)


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, edit(item.filename, zin.read(item.filename)))


def test_truncated_file(tmp_path, small):
    path = tmp_path / "model.gap"
    small.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="damaged or truncated"):
        load(path)


def test_damaged_array(tmp_path, small):
    path = tmp_path / "model.gap"
    small.save(path)
    bad = tmp_path / "bad.gap"

    def edit(name, blob):
        if name == "coefficients.npy":
            arr = bytearray(blob)
            arr[-3] ^= 0xFF
            return bytes(arr)
        return blob

    _rewrite(path, bad, edit)  # zip CRCs recomputed: only the sha256 can tell
    with pytest.raises(
        ModelFileError,
        match=re.escape(f"{str(bad)!r}: array 'coefficients' does not match its sha256 checksum"),
    ):
        load(bad)


def test_newer_schema_is_refused(tmp_path, small):
    path = tmp_path / "model.gap"
    small.save(path)
    future = tmp_path / "future.gap"
    text = {}

    def edit(name, blob):
        if name == "header.json":
            envelope = json.loads(blob)
            envelope["schema_version"] = SCHEMA_VERSION + 1
            text["header"] = json.dumps(envelope).encode()
            return text["header"]
        if name == "header.sha256":
            return hashlib.sha256(text["header"]).hexdigest().encode()
        return blob

    _rewrite(path, future, edit)
    with pytest.raises(
        ModelFileError,
        match=re.escape(
            f"{str(future)!r} was written by a newer gapkit (model schema "
            f"{SCHEMA_VERSION + 1}; this gapkit reads schema {SCHEMA_VERSION})"
        ),
    ):
        load(future)


def test_not_a_model_and_missing_file(tmp_path):
    binary = tmp_path / "notes.gap"
    binary.write_bytes(b"\x00\x01binary")
    with pytest.raises(
        ModelFileError,
        match=re.escape(f"{str(binary)!r} is not a gapkit model file: it is not a zip archive"),
    ):
        load(binary)
    absent = tmp_path / "absent.gap"
    with pytest.raises(FileNotFoundError, match=re.escape(f"No model file at {str(absent)!r}")):
        load(absent)


def test_write_model_file_is_what_save_uses(tmp_path, small, monkeypatch):
    seen = []
    real = gapkit.io.write_model_file

    def spy(path, header, arrays):
        seen.append((sorted(header), sorted(arrays)))
        return real(path, header, arrays)

    monkeypatch.setattr("gapkit.estimator.write_model_file", spy)
    small.save(tmp_path / "model.gap")
    assert seen == [(["model", "params"], sorted(MODEL_ARRAYS))]


def test_read_structures_errors(tmp_path):
    missing = tmp_path / "none.xyz"
    with pytest.raises(FileNotFoundError, match=re.escape(f"No structure file at {missing}.")):
        read_structures(missing)
    bad = tmp_path / "bad.xyz"
    bad.write_text("not an xyz file\n")
    with pytest.raises(
        InvalidStructureError, match=re.escape(f"Could not read structures from {bad}: ") + ".*xyz"
    ):
        read_structures(bad)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(
        InvalidStructureError,
        match=re.escape(f"Could not read structures from {empty}: ") + "Empty file",
    ):
        read_structures(empty)
