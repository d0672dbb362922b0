"""The model-file layer (gapkit.io.write_model_file / read_model_file).

Real round trips, and real damaged or crafted files built by hand with
zipfile / zlib, each pinned to the exception and its message.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from gapkit.exceptions import InvalidParameterError, ModelFileError
from gapkit.io import MAX_ARRAY_ELEMENTS, SCHEMA_VERSION, read_model_file, write_model_file

STATE = {
    "params": {"n_sparse": 7, "kernel": "dot", "sigma": [0.01, 0.1]},
    "species": ["Cu"],
    "e0": {"Cu": -1.5},
    "log_marginal_likelihood": -12.25,
}
MEMORY_LIMIT = 50 * 2**20  # peak traced memory allowed while refusing a crafted file


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "coefficients": rng.normal(size=7),
        "sparse_numbers": np.arange(7, dtype=np.int64) * 10**15,
        "r_factor": np.triu(rng.normal(size=(7, 7))),
    }


@pytest.fixture()
def model(tmp_path):
    return write_model_file(tmp_path / "model.gap", STATE, _arrays())


def _rezip(src, dst, edit=lambda name, blob: blob, compress_type=None):
    """Copy a zip member by member through ``edit``; CRCs and sizes are recomputed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            blob = edit(item.filename, zin.read(item.filename))
            if blob is None:
                continue
            if compress_type is not None and item.filename.endswith(".npy"):
                item.compress_type = compress_type
            zout.writestr(item, blob)
    return dst


def _edit_envelope(src, dst, change, *, fix_checksum=True):
    """Rewrite header.json through ``change(envelope) -> envelope or text``."""

    def edit(name, blob):
        if name == "header.json":
            new = change(json.loads(blob))
            edit.text = (new if isinstance(new, str) else json.dumps(new)).encode()
            return edit.text
        if name == "header.sha256" and fix_checksum:
            return None  # written last, below
        return blob

    _rezip(src, dst, edit)
    if fix_checksum:
        with zipfile.ZipFile(dst, "a") as zf:
            zf.writestr("header.sha256", hashlib.sha256(edit.text).hexdigest())
    return dst


def _raw_zip(path, members):
    """Write a zip by hand: ``members`` are (name, raw data, method, crc, file_size).

    The raw data are written as they are (already deflated for method 8), so
    the declared sizes may lie about what they decompress to.
    """
    local, central = b"", b""
    for name, data, method, crc, size in members:
        fname = name.encode()
        offset = len(local)
        local += (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(fname),
                0,
            )
            + fname
            + data
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(fname),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + fname
        )
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0
    )
    path.write_bytes(local + central + end)
    return path


def _deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _stored(name, data):
    return (name, _deflate(data), 8, zlib.crc32(data), len(data))


def _envelope(arrays):
    return {
        "format": "gapkit-model",
        "schema_version": SCHEMA_VERSION,
        "gapkit_version": "0",
        "dscribe_version": None,
        "state": {},
        "arrays": arrays,
    }


def _header_members(envelope):
    text = json.dumps(envelope).encode()
    return [
        _stored("header.json", text),
        _stored("header.sha256", hashlib.sha256(text).hexdigest().encode()),
    ]


def _npy_header(shape, descr="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _peak_while_refused(path, match, **kwargs):
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=match):
            read_model_file(path, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"peak traced memory {peak / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- round trips


def test_round_trip_is_bit_identical(model):
    arrays = _arrays()
    state, loaded = read_model_file(model, expected={"coefficients": 1, "r_factor": 2})
    assert state == STATE
    assert loaded.keys() == arrays.keys()
    for name, a in arrays.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape
        assert loaded[name].tobytes() == a.tobytes()
        assert loaded[name].flags.writeable and loaded[name].flags.c_contiguous


def test_round_trip_of_unusual_arrays(tmp_path):
    arrays = {
        "scalar": np.asarray(2.5),
        "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(4, dtype=">i8"),
    }
    path = write_model_file(tmp_path / "m.gap", {}, arrays)
    state, loaded = read_model_file(path)
    assert state == {}
    for name, a in arrays.items():
        assert loaded[name].shape == a.shape
        np.testing.assert_array_equal(loaded[name], a)
    assert loaded["big_endian"].dtype == np.dtype("<i8")


def test_envelope_layout_and_no_pickle(model):
    with zipfile.ZipFile(model) as zf:
        assert zf.namelist() == [
            "header.json",
            "header.sha256",
            "coefficients.npy",
            "sparse_numbers.npy",
            "r_factor.npy",
        ]
        text = zf.read("header.json")
        assert zf.read("header.sha256").decode().strip() == hashlib.sha256(text).hexdigest()
    envelope = json.loads(text)
    assert set(envelope) == {
        "format",
        "schema_version",
        "gapkit_version",
        "dscribe_version",
        "state",
        "arrays",
    }
    assert envelope["format"] == "gapkit-model" and envelope["schema_version"] == 1
    assert envelope["arrays"]["r_factor"]["shape"] == [7, 7]
    assert envelope["arrays"]["sparse_numbers"]["dtype"] == "int64"
    with np.load(model, allow_pickle=False) as data:  # plain .npy members
        np.testing.assert_array_equal(data["coefficients"], _arrays()["coefficients"])


def test_equal_content_gives_equal_files(tmp_path):
    a = write_model_file(tmp_path / "a.gap", STATE, _arrays())
    b = write_model_file(tmp_path / "b.gap", STATE, _arrays())
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_file_mode_follows_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_model_file(tmp_path / "m.gap", STATE, _arrays())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_existing_file(model, monkeypatch):
    before = model.read_bytes()

    def write_half_then_fail(fh, array, **kwargs):
        fh.write(b"\x93NUMPY half an array")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", write_half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_model_file(model, {"other": 1}, _arrays())
    assert model.read_bytes() == before
    assert [p.name for p in model.parent.iterdir()] == ["model.gap"]


def test_write_into_missing_directory(tmp_path):
    path = tmp_path / "no_such_dir" / "m.gap"
    with pytest.raises(
        InvalidParameterError, match=re.escape(f"cannot write {str(path)!r}: directory")
    ):
        write_model_file(path, STATE, _arrays())
    assert not path.parent.exists()


@pytest.mark.parametrize(
    "header, arrays, match",
    [
        ([1, 2], {}, "'header' must be a dict; got list"),
        ({"a": {1, 2}}, {}, "'header' must be JSON-serialisable"),
        ({}, {"x": np.array([object()])}, "dtype float64 or int64; got object .*pickle"),
        ({}, {"x": np.zeros(3, dtype=np.float32)}, "dtype float64 or int64; got float32"),
        ({}, {"x": [1.0, 2.0]}, "must be a numpy ndarray; got list"),
        ({}, {"../x": np.zeros(3)}, "array name '../x' is not allowed"),
    ],
)
def test_write_refuses_what_cannot_be_stored(tmp_path, header, arrays, match):
    with pytest.raises(InvalidParameterError, match=match):
        write_model_file(tmp_path / "m.gap", header, arrays)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- not a model


def test_missing_file(tmp_path):
    path = tmp_path / "absent.gap"
    with pytest.raises(FileNotFoundError, match=re.escape(f"No model file at {str(path)!r}")):
        read_model_file(path)


def test_structure_file_is_named_as_such(tmp_path):
    from ase.build import bulk
    from ase.io import write

    path = tmp_path / "cu.xyz"
    write(path, bulk("Cu"))
    message = (
        f"{str(path)!r} is not a gapkit model file: it looks like a text/structure "
        "file (.xyz); a model file is written by GAPRegressor.save / gapkit fit -o"
    )
    with pytest.raises(ModelFileError, match=re.escape(message)):
        read_model_file(path)


def test_message_names_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ModelFileError, match=r"^'notes.txt' is not a gapkit model file"):
        read_model_file("notes.txt")


def test_empty_file(tmp_path):
    (tmp_path / "m.gap").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"m.gap' is empty \(0 bytes\)"):
        read_model_file(tmp_path / "m.gap")


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory, not a gapkit model file"):
        read_model_file(tmp_path)


def test_binary_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "m.gap").write_bytes(bytes(range(256)))
    with pytest.raises(ModelFileError, match="not a zip archive"):
        read_model_file(tmp_path / "m.gap")


def test_zip_that_is_not_a_model(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros(3))
    with pytest.raises(ModelFileError, match="zip archive without 'header.json'"):
        read_model_file(tmp_path / "data.npz")


def test_earlier_layout_is_named(tmp_path):
    header = np.frombuffer(json.dumps({"format": "gapkit-model"}).encode(), dtype=np.uint8)
    with open(tmp_path / "old.gap", "wb") as fh:
        np.savez_compressed(fh, header=header, coefficients=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"earlier gapkit model layout \(header.npy\)"):
        read_model_file(tmp_path / "old.gap")


# --------------------------------------------------------------------------- damaged


@pytest.mark.parametrize("keep", [0.5, -1, 40])
def test_truncated_file(model, keep):
    data = model.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    model.write_bytes(data[:n])
    with pytest.raises(ModelFileError, match="zip archive is damaged or truncated"):
        read_model_file(model)


def test_flipped_byte_in_array(model, tmp_path):
    def edit(name, blob):
        if name == "coefficients.npy":
            blob = bytearray(blob)
            blob[-3] ^= 0x01
        return bytes(blob)

    bad = _rezip(model, tmp_path / "bad.gap", edit)
    with pytest.raises(
        ModelFileError, match="array 'coefficients' does not match its sha256 checksum"
    ):
        read_model_file(bad)


def test_flipped_byte_in_compressed_data(model):
    data = bytearray(model.read_bytes())
    with zipfile.ZipFile(model) as zf:
        info = zf.getinfo("r_factor.npy")
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x10
    model.write_bytes(bytes(data))
    with pytest.raises(
        ModelFileError, match="cannot read member 'r_factor.npy': the file is damaged"
    ):
        read_model_file(model)


def test_flipped_byte_in_header(model, tmp_path):
    def edit(name, blob):
        if name == "header.json":
            return blob.replace(b'"n_sparse": 7', b'"n_sparse": 8')
        return blob

    bad = _rezip(model, tmp_path / "bad.gap", edit)
    with pytest.raises(ModelFileError, match="header does not match its sha256 checksum"):
        read_model_file(bad)


def test_missing_array_member(model, tmp_path):
    bad = _rezip(
        model, tmp_path / "bad.gap", lambda name, blob: None if name == "coefficients.npy" else blob
    )
    with pytest.raises(ModelFileError, match="has no member 'coefficients.npy'"):
        read_model_file(bad)


@pytest.mark.parametrize(
    "text, kind", [("[1, 2]", "list"), ('"model"', "str"), ("3.5", "float"), ("null", "NoneType")]
)
def test_header_must_be_an_object(model, tmp_path, text, kind):
    bad = _edit_envelope(model, tmp_path / "bad.gap", lambda env: text)
    with pytest.raises(ModelFileError, match=f"header must be a JSON object; got a JSON {kind}"):
        read_model_file(bad)


def test_header_that_is_not_json(model, tmp_path):
    bad = _edit_envelope(model, tmp_path / "bad.gap", lambda env: '{"format": ')
    with pytest.raises(ModelFileError, match="'header.json' is not valid UTF-8 JSON"):
        read_model_file(bad)


def test_wrong_format(model, tmp_path):
    bad = _edit_envelope(model, tmp_path / "bad.gap", lambda env: {**env, "format": "other"})
    with pytest.raises(ModelFileError, match="'format' is 'other', expected 'gapkit-model'"):
        read_model_file(bad)


@pytest.mark.parametrize("version", ["1", 1.0, True, 0, -1, None])
def test_invalid_schema_version(model, tmp_path, version):
    bad = _edit_envelope(
        model, tmp_path / "bad.gap", lambda env: {**env, "schema_version": version}
    )
    with pytest.raises(
        ModelFileError,
        match=re.escape(f"'schema_version' must be an integer >= 1; got {version!r}"),
    ):
        read_model_file(bad)


def test_newer_schema_version(model, tmp_path):
    bad = _edit_envelope(
        model, tmp_path / "bad.gap", lambda env: {"format": env["format"], "schema_version": 99}
    )
    with pytest.raises(
        ModelFileError, match=r"written by a newer gapkit \(model schema 99.*upgrade gapkit"
    ):
        read_model_file(bad)


@pytest.mark.parametrize(
    "key", ["format", "schema_version", "gapkit_version", "dscribe_version", "state", "arrays"]
)
def test_missing_required_key(model, tmp_path, key):
    def drop(env):
        del env[key]
        return env

    bad = _edit_envelope(model, tmp_path / "bad.gap", drop)
    with pytest.raises(ModelFileError, match=f"the header has no required key '{key}'"):
        read_model_file(bad)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("shape", [-1], "'shape' must be a list of at most 64 non-negative integers"),
        ("shape", [7.0], "'shape' must be a list"),
        ("shape", [True], "'shape' must be a list"),
        ("shape", "7", "'shape' must be a list"),
        ("dtype", "object", r"'dtype' must be one of \['float64', 'int64'\]; got 'object'"),
        ("dtype", "float32", "'dtype' must be one of"),
        ("sha256", "abc", "'sha256' must be 64 hex digits"),
    ],
)
def test_invalid_array_entry(model, tmp_path, field, value, match):
    def change(env):
        env["arrays"]["coefficients"][field] = value
        return env

    bad = _edit_envelope(model, tmp_path / "bad.gap", change)
    with pytest.raises(ModelFileError, match=f"array 'coefficients': {match}"):
        read_model_file(bad)


def test_declared_dtype_disagrees_with_member(model, tmp_path):
    def change(env):
        env["arrays"]["sparse_numbers"]["dtype"] = "float64"
        return env

    bad = _edit_envelope(model, tmp_path / "bad.gap", change)
    with pytest.raises(
        ModelFileError,
        match=re.escape(
            "member 'sparse_numbers.npy' holds shape (7,) (int64) but the header declares "
            "shape (7,) (float64)"
        ),
    ):
        read_model_file(bad)


def test_pickled_member_is_never_unpickled(model, tmp_path, monkeypatch):
    def pickled(name, blob):
        if name == "coefficients.npy":
            buf = io.BytesIO()
            np.lib.format.write_array(
                buf, np.array([1, "a", None] * 3, dtype=object), allow_pickle=True
            )
            return buf.getvalue()
        return blob

    bad = _rezip(model, tmp_path / "bad.gap", pickled)

    def refuse(*args, **kwargs):
        raise AssertionError("the reader unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(ModelFileError, match=r"holds shape \(9,\) \(object\)"):
        read_model_file(bad)


def test_unsupported_compression(model, tmp_path):
    bad = _rezip(model, tmp_path / "bad.gap", compress_type=zipfile.ZIP_BZIP2)
    with pytest.raises(ModelFileError, match="uses zip compression method 12"):
        read_model_file(bad)


def test_expected_arrays(model):
    with pytest.raises(ModelFileError, match="the file has no array 'qtb'"):
        read_model_file(model, expected={"coefficients": 1, "qtb": 1})
    with pytest.raises(
        ModelFileError,
        match=re.escape("array 'r_factor' must have 1 dimension(s); the file holds shape (7, 7)"),
    ):
        read_model_file(model, expected={"r_factor": 1})


def test_max_elements(model):
    assert MAX_ARRAY_ELEMENTS == 2**28
    with pytest.raises(
        ModelFileError,
        match=re.escape(
            "array 'r_factor': the file claims shape (7, 7), 49 elements, more than the "
            "limit of 48 elements"
        ),
    ):
        read_model_file(model, max_elements=48)
    assert read_model_file(model, max_elements=49)[1]["r_factor"].shape == (7, 7)
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(
            InvalidParameterError, match=f"'max_elements' must be an integer >= 0; got {bad!r}"
        ):
            read_model_file(model, max_elements=bad)


# --------------------------------------------------------------------------- crafted sizes


def test_header_claiming_a_huge_array(model, tmp_path):
    def change(env):
        env["arrays"]["coefficients"]["shape"] = [10**6, 10**6]
        return env

    bad = _edit_envelope(model, tmp_path / "bad.gap", change)
    _peak_while_refused(
        bad,
        re.escape(
            "array 'coefficients': the file claims shape (1000000, 1000000), 1000000000000 "
            f"elements, more than the limit of {2**28} elements"
        ),
    )


def test_npy_header_claiming_a_huge_array(model, tmp_path):
    def edit(name, blob):
        if name == "coefficients.npy":  # the data of 7 floats, under a huge .npy header
            return _npy_header((10**6, 10**6)) + blob[-56:]
        return blob

    bad = _rezip(model, tmp_path / "bad.gap", edit)
    _peak_while_refused(
        bad,
        re.escape(
            "member 'coefficients.npy' holds shape (1000000, 1000000) (float64) but the header "
            "declares shape (7,) (float64)"
        ),
    )


def _zeros_bomb(n_mib, shape=(1000,), npy_header=None):
    """A raw deflate stream of a float64 .npy header then ``n_mib`` MiB of zeros.

    After a full flush the compressor starts afresh, so one compressed MiB can be
    repeated: 1 GiB of zeros costs about 1 MB and no time.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    npy_header = _npy_header(shape) if npy_header is None else npy_header
    prefix = c.compress(npy_header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    return prefix + block * n_mib + c.flush()


def _bomb_file(path, stream, declared_size, crc, shape=(1000,)):
    n = int(np.prod(shape))
    envelope = _envelope(
        {
            "coefficients": {
                "shape": list(shape),
                "dtype": "float64",
                "sha256": hashlib.sha256(bytes(8 * n)).hexdigest(),
            }
        }
    )
    return _raw_zip(
        path, _header_members(envelope) + [("coefficients.npy", stream, 8, crc, declared_size)]
    )


def test_zip_bomb_declaring_a_small_size(tmp_path):
    # 1 MB that inflates to 1 GiB, in a member that claims to hold 8 kB: its
    # compressed size alone gives it away, before anything is decompressed.
    stream = _zeros_bomb(1024)
    assert len(stream) < 1.1e6
    size = 128 + 8000
    path = _bomb_file(tmp_path / "bomb.gap", stream, size, zlib.crc32(bytes(size)))
    _peak_while_refused(
        path,
        "member 'coefficients.npy' holds 10[0-9]{5} compressed bytes "
        "but claims 8128 bytes uncompressed",
    )


def test_zip_bomb_declaring_its_true_size(tmp_path):
    # the member says honestly that it inflates to 1 GiB; the header says 8 kB
    path = _bomb_file(tmp_path / "bomb.gap", _zeros_bomb(1024), 128 + 2**30, 0)
    _peak_while_refused(
        path,
        re.escape(
            f"member 'coefficients.npy' claims {128 + 2**30} bytes uncompressed, but an array of "
            "shape (1000,) (float64) takes 8000 bytes"
        ),
    )


def test_zip_bomb_is_never_inflated_past_the_declared_size(tmp_path):
    # 256 MiB of zeros in 270 kB, in a member that claims the 2 MiB of a
    # (262144,) array: sizes are plausible, so the reader starts to inflate,
    # stops at the 2 MiB it expects and finds the CRC of the whole stream wrong.
    shape = (2**18,)
    stream = _zeros_bomb(256, shape)
    size = len(_npy_header(shape)) + 8 * 2**18
    path = _bomb_file(tmp_path / "bomb.gap", stream, size, 0x12345678, shape=shape)
    _peak_while_refused(
        path, "cannot read member 'coefficients.npy': the file is damaged or truncated .*Bad CRC-32"
    )


def test_npy_header_length_bomb(tmp_path):
    # every size is consistent with a (2**27,) array of 1 GiB, but the .npy
    # (version 2.0) header claims to be 4 GiB long: numpy would ask the stream
    # for 4 GiB at once, and the reader must not let it.
    shape = (2**27,)
    npy_header = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1)
    stream = _zeros_bomb(1024, shape, npy_header)
    path = _bomb_file(tmp_path / "bomb.gap", stream, len(npy_header) + 2**30, 0, shape=shape)
    _peak_while_refused(
        path,
        "cannot read member 'coefficients.npy': the file is damaged or truncated .*array header",
    )


def test_header_claiming_a_huge_size(tmp_path):
    text = json.dumps(_envelope({})).encode()
    members = [
        ("header.json", _deflate(text), 8, zlib.crc32(text), 4 * 10**9),
        _stored("header.sha256", hashlib.sha256(text).hexdigest().encode()),
    ]
    path = _raw_zip(tmp_path / "m.gap", members)
    _peak_while_refused(
        path, f"member 'header.json' claims 4000000000 bytes, more than the limit of {16 * 2**20}"
    )


def test_hand_built_file_is_read(tmp_path):
    # the helpers above build valid files unless told to lie
    data = np.arange(1000.0)
    envelope = _envelope(
        {
            "x": {
                "shape": [1000],
                "dtype": "float64",
                "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
            }
        }
    )
    blob = _npy_header((1000,)) + data.tobytes()
    path = _raw_zip(tmp_path / "m.gap", _header_members(envelope) + [_stored("x.npy", blob)])
    state, arrays = read_model_file(path)
    assert state == {}
    np.testing.assert_array_equal(arrays["x"], data)
