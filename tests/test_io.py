"""Model files: round trip, damaged and newer files, no pickle."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from gapkit import load
from gapkit.exceptions import ModelFileError
from gapkit.io import SCHEMA_VERSION, read_structures


def test_round_trip_gives_identical_predictions(tmp_path, cuau_model, cuau_frames):
    path = tmp_path / "model.gap"
    cuau_model.save(path)
    loaded = load(path)
    frames = cuau_frames[:3]
    np.testing.assert_array_equal(loaded.predict(frames), cuau_model.predict(frames))
    for a, b in zip(loaded.predict_forces(frames), cuau_model.predict_forces(frames),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict_stress(frames), cuau_model.predict_stress(frames))
    assert loaded.get_params(deep=True).keys() == cuau_model.get_params(deep=True).keys()
    assert loaded.species_ == cuau_model.species_ and loaded.e0_ == cuau_model.e0_


def test_file_holds_no_pickle(tmp_path, cu_model):
    path = tmp_path / "model.gap"
    cu_model.save(path)
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(bytes(data["header"]).decode())
        for name in data.files:
            assert data[name].dtype != object
    assert header["schema_version"] == SCHEMA_VERSION
    assert header["format"] == "gapkit-model"


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, edit(item.filename, zin.read(item.filename)))


def test_truncated_file(tmp_path, cu_model):
    path = tmp_path / "model.gap"
    cu_model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="damaged or truncated"):
        load(path)


def test_damaged_array(tmp_path, cu_model):
    path = tmp_path / "model.gap"
    cu_model.save(path)
    bad = tmp_path / "bad.gap"

    def edit(name, blob):
        if name == "coefficients.npy":
            arr = bytearray(blob)
            arr[-3] ^= 0xFF
            return bytes(arr)
        return blob

    _rewrite(path, bad, edit)
    with pytest.raises(ModelFileError, match="checksum"):
        load(bad)


def test_newer_schema_is_refused(tmp_path, cu_model):
    path = tmp_path / "model.gap"
    cu_model.save(path)
    newer = tmp_path / "newer.gap"

    def edit(name, blob):
        if name == "header.npy":
            header_arr = np.lib.format.read_array(io.BytesIO(blob))
            header = json.loads(bytes(header_arr).decode())
            header["schema_version"] = SCHEMA_VERSION + 1
            buf = io.BytesIO()
            np.lib.format.write_array(
                buf, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
            return buf.getvalue()
        return blob

    _rewrite(path, newer, edit)
    with pytest.raises(ModelFileError, match="newer"):
        load(newer)


def test_not_a_model_and_missing_file(tmp_path):
    text = tmp_path / "notes.gap"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable gapkit model"):
        load(text)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.gap")


def test_save_failure_keeps_existing_file(tmp_path, cu_model, monkeypatch):
    path = tmp_path / "model.gap"
    cu_model.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        cu_model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.gap"]


def test_read_structures_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_structures(tmp_path / "none.xyz")
    bad = tmp_path / "bad.xyz"
    bad.write_text("not an xyz file\n")
    with pytest.raises(Exception, match="Could not read"):
        read_structures(bad)
