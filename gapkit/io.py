"""Model files and structure files.

A model file is data, never code, and it may come from anywhere: a colleague,
a download, a disk that filled up half-way through a save. This module is the
low-level layer that writes and reads it; it knows nothing about estimators.
The caller (``GAPRegressor.save`` / ``gapkit.load``) decides what goes in the
header and the arrays.

Why the file looks like this
----------------------------
- **No pickle.** Unpickling runs arbitrary code, so a model file holds only a
  JSON header and plain ``float64``/``int64`` arrays in ``.npy`` format;
  object arrays are refused when writing and the reader never calls anything
  that could unpickle (it parses the ``.npy`` headers itself and copies the raw
  bytes).
- **Bounded reads.** A damaged or crafted file must fail with a
  :class:`~gapkit.exceptions.ModelFileError` naming the file, not exhaust the
  memory. Every size the file *claims* (the header length, an array's shape,
  a zip member's uncompressed size) is checked against a limit and against the
  other claims *before* memory is allocated for it, and every decompression
  is bounded by the size expected, so a "zip bomb" whose declared sizes lie
  cannot make the reader hold more than the declared array.
- **Checksums.** The header and every array carry a SHA-256, so a flipped
  byte is reported as damage rather than silently giving a different model.
- **Atomic writes.** The file is written to a temporary file in the same
  directory and renamed over the target (:func:`gapkit._files.atomic_write`),
  so a failed save leaves an existing model untouched.

Layout (schema 1, :func:`write_model_file`)
-------------------------------------------
A zip archive (deflate) with the members

- ``header.json``: the envelope, ASCII JSON with sorted keys::

      {"format": "gapkit-model", "schema_version": 1,
       "gapkit_version": "...", "dscribe_version": "..." or null,
       "state": {...the caller's header...},
       "arrays": {"<name>": {"shape": [...], "dtype": "float64" | "int64",
                             "sha256": "<hex of the C-order bytes>"}, ...}}

- ``header.sha256``: the hex SHA-256 of the bytes of ``header.json``;
- ``<name>.npy``: one ``.npy`` file (C order, little-endian) per array.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import json
import math
import operator
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._files import atomic_write
from .exceptions import (
    InvalidParameterError,
    InvalidStructureError,
    ModelFileError,
)

__all__ = [
    "write_model_file",
    "read_model_file",
    "read_structures",
    "is_model_file",
    "SCHEMA_VERSION",
    "MAX_ARRAY_ELEMENTS",
    "MAX_HEADER_BYTES",
]

#: Version of the model-file layout written by this gapkit.
SCHEMA_VERSION = 1
#: Default limit on the number of elements of one array in a model file
#: (2**28 elements: 2 GiB of float64, e.g. an ``(16384, 16384)`` matrix).
MAX_ARRAY_ELEMENTS = 2**28
#: Limit on the size of ``header.json`` (16 MiB).
MAX_HEADER_BYTES = 16 * 2**20

_FORMAT = "gapkit-model"
_ARRAYS = {
    "sparse_features": 2,
    "sparse_numbers": 1,
    "delta": 1,
    "coefficients": 1,
    "r_factor": 2,
    "qtb": 1,
}
_OWNER = "GAPRegressor.save"
_HEADER_MEMBER = "header.json"
_CHECKSUM_MEMBER = "header.sha256"
_REQUIRED_KEYS = (
    "format",
    "schema_version",
    "gapkit_version",
    "dscribe_version",
    "state",
    "arrays",
)
_DTYPES = {"float64": np.dtype("<f8"), "int64": np.dtype("<i8")}
_NAME = re.compile(r"[A-Za-z0-9_]{1,128}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_NDIM = 64
# An .npy header: 10 (v1) or 12 (v2) bytes of prefix, then at most
# ``max_header_size`` (10000) bytes that numpy's reader accepts.
_NPY_HEADER_CAP = 12 + 10_000
_CHUNK = 2**20
_SNIFF = 4096
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that equal models give equal files


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# --------------------------------------------------------------------------- writing


def _dtype_name(dtype: np.dtype) -> str | None:
    if dtype.fields is None and dtype.subdtype is None and dtype.itemsize == 8:
        return {"f": "float64", "i": "int64"}.get(dtype.kind)
    return None


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def write_model_file(path, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write a model file: a JSON header and named arrays, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write. An existing file is replaced only once the new one
        is complete; the new file gets mode ``0o666 & ~umask``.
    header : dict
        The caller's state (parameters, species, reference energies,
        hyperparameters, ...). It must be JSON-serialisable: dicts with
        string keys, lists, str, int, float, bool and None. JSON has no
        tuples and no non-string keys, so tuples come back as lists and
        integer keys as strings.
    arrays : dict of str to ndarray
        The arrays, keyed by name (1 to 128 letters, digits or ``_``). Each
        must have dtype ``float64`` or ``int64``; it is stored in C order,
        little-endian. Object arrays are refused: they would need pickle.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    InvalidParameterError
        ``header`` is not a JSON-serialisable dict or is larger than
        :data:`MAX_HEADER_BYTES`; an array has a name or dtype that is not
        allowed; the output directory does not exist or is not writable, or
        ``path`` is a directory (see :func:`gapkit._files.check_output_path`).
    OSError
        Writing failed (for instance a full disk); any existing file is kept.

    Notes
    -----
    The layout is described in the module docstring: ``header.json`` (the
    envelope with ``format``, ``schema_version``, ``gapkit_version``,
    ``dscribe_version``, ``state`` = ``header`` and, for every array, its
    ``shape``, ``dtype`` and SHA-256), ``header.sha256`` (the SHA-256 of
    ``header.json``) and one ``<name>.npy`` member per array.
    """
    owner = _OWNER
    if not isinstance(header, dict):
        raise InvalidParameterError(
            f"{owner}: 'header' must be a dict; got {type(header).__name__}."
        )
    if not isinstance(arrays, dict):
        raise InvalidParameterError(
            f"{owner}: 'arrays' must be a dict of name to ndarray; got {type(arrays).__name__}."
        )
    prepared: dict[str, np.ndarray] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidParameterError(
                f"{owner}: array name {name!r} is not allowed; use 1 to 128 letters, digits or '_'."
            )
        if not isinstance(arr, np.ndarray):
            raise InvalidParameterError(
                f"{owner}: array {name!r} must be a numpy ndarray; got {type(arr).__name__}."
            )
        kind = _dtype_name(arr.dtype)
        if kind is None:
            why = (
                " (object arrays would need pickle, which model files never hold)"
                if arr.dtype.hasobject
                else ""
            )
            raise InvalidParameterError(
                f"{owner}: array {name!r} must have dtype float64 or int64; got "
                f"{arr.dtype}{why}. Convert it with .astype(np.float64) or .astype(np.int64)."
            )
        if arr.ndim > _MAX_NDIM:
            raise InvalidParameterError(
                f"{owner}: array {name!r} must have at most {_MAX_NDIM} dimensions; got {arr.ndim}."
            )
        a = np.asarray(arr, dtype=_DTYPES[kind], order="C")  # keeps 0-d arrays 0-d
        prepared[name] = a
        entries[name] = {
            "shape": list(a.shape),
            "dtype": kind,
            "sha256": hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest(),
        }

    from importlib.metadata import PackageNotFoundError, version

    try:
        gapkit_version: str | None = version("gapkit")
    except PackageNotFoundError:
        gapkit_version = None
    try:
        dscribe_version: str | None = version("dscribe")
    except PackageNotFoundError:
        dscribe_version = None
    envelope = {
        "format": _FORMAT,
        "schema_version": SCHEMA_VERSION,
        "gapkit_version": gapkit_version,
        "dscribe_version": dscribe_version,
        "state": header,
        "arrays": entries,
    }
    try:
        text = json.dumps(envelope, indent=1, sort_keys=True, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError) as err:
        raise InvalidParameterError(
            f"{owner}: 'header' must be JSON-serialisable (dicts with string keys, lists, str, "
            f"int, float, bool, None); {err}."
        ) from err
    blob = text.encode("ascii")
    if len(blob) > MAX_HEADER_BYTES:
        raise InvalidParameterError(
            f"{owner}: the header takes {len(blob)} bytes of JSON, more than the limit of "
            f"{MAX_HEADER_BYTES}; store large data as arrays."
        )
    digest = hashlib.sha256(blob).hexdigest()

    def write(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_zip_info(_HEADER_MEMBER), blob)
            zf.writestr(_zip_info(_CHECKSUM_MEMBER), (digest + "\n").encode("ascii"))
            for name, a in prepared.items():
                big = a.nbytes + _NPY_HEADER_CAP >= zipfile.ZIP64_LIMIT
                with zf.open(_zip_info(f"{name}.npy"), "w", force_zip64=big) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)

    return atomic_write(path, write, owner=owner)


# --------------------------------------------------------------------------- reading


class _Capped:
    """A read-only view of a stream that hands out at most ``cap`` bytes."""

    def __init__(self, raw: IO[bytes], cap: int):
        self.raw, self.left, self.count = raw, cap, 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.raw.read(n) if n else b""
        self.left -= len(data)
        self.count += len(data)
        return data


@contextlib.contextmanager
def _reading(shown: str, what: str) -> Iterator[None]:
    """Turn what zipfile, zlib and numpy raise on bad data into ModelFileError."""
    try:
        yield
    except ModelFileError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,
        ValueError,
        KeyError,
        struct.error,
        OverflowError,
    ) as err:
        raise ModelFileError(
            f"{shown!r}: cannot read {what}: the file is damaged or truncated "
            f"({type(err).__name__}: {err})."
        ) from err


def _looks_like_text(lead: bytes) -> bool:
    if not lead or b"\x00" in lead:
        return False
    try:  # incremental: a multi-byte character cut at the end is not an error
        chars = codecs.getincrementaldecoder("utf-8")().decode(lead, final=False)
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r\f\v" for c in chars)


def _member(zf: zipfile.ZipFile, name: str, shown: str) -> zipfile.ZipInfo:
    """The member ``name``, refused if its declared sizes cannot be right."""
    info = zf.getinfo(name)
    if info.flag_bits & 0x1:
        raise ModelFileError(
            f"{shown!r}: member {name!r} is encrypted; gapkit model files are not."
        )
    if info.compress_type == zipfile.ZIP_STORED:
        consistent = info.compress_size == info.file_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        # deflate never expands data by more than a few bytes per 16 KiB block
        consistent = info.compress_size <= info.file_size + info.file_size // 256 + 1024
    else:
        raise ModelFileError(
            f"{shown!r}: member {name!r} uses zip compression method {info.compress_type}; "
            "gapkit model files use deflate (8) or none (0)."
        )
    if not consistent:
        raise ModelFileError(
            f"{shown!r}: member {name!r} holds {info.compress_size} compressed bytes but "
            f"claims {info.file_size} bytes uncompressed: the file is damaged or crafted."
        )
    return info


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, shown: str) -> bytes:
    if info.file_size > cap:
        raise ModelFileError(
            f"{shown!r}: member {info.filename!r} claims {info.file_size} bytes, more than the "
            f"limit of {cap}."
        )
    with _reading(shown, f"member {info.filename!r}"), zf.open(info) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ModelFileError(
            f"{shown!r}: member {info.filename!r} holds more than the limit of {cap} bytes."
        )
    return data


def _check_envelope(envelope: Any, shown: str) -> tuple[dict, dict]:
    if not isinstance(envelope, dict):
        raise ModelFileError(
            f"{shown!r} is not a gapkit model file: its header must be a JSON object; got a "
            f"JSON {type(envelope).__name__}."
        )
    if "format" not in envelope:
        raise ModelFileError(f"{shown!r}: the header has no required key 'format'.")
    if envelope["format"] != _FORMAT:
        raise ModelFileError(
            f"{shown!r} is not a gapkit model file: 'format' is {envelope['format']!r}, "
            f"expected {_FORMAT!r}."
        )
    if "schema_version" not in envelope:
        raise ModelFileError(f"{shown!r}: the header has no required key 'schema_version'.")
    version = envelope["schema_version"]
    if type(version) is not int or version < 1:
        raise ModelFileError(
            f"{shown!r}: 'schema_version' must be an integer >= 1; got {version!r} "
            f"({type(version).__name__}). The file is damaged or not a gapkit model."
        )
    if version > SCHEMA_VERSION:
        raise ModelFileError(
            f"{shown!r} was written by a newer gapkit (model schema {version}; this gapkit "
            f"reads schema {SCHEMA_VERSION}); upgrade gapkit to read it."
        )
    for key in _REQUIRED_KEYS:
        if key not in envelope:
            raise ModelFileError(f"{shown!r}: the header has no required key {key!r}.")
    for key, kinds, what in (
        ("gapkit_version", (str,), "a string"),
        ("dscribe_version", (str, type(None)), "a string or null"),
        ("state", (dict,), "a JSON object"),
        ("arrays", (dict,), "a JSON object"),
    ):
        if not isinstance(envelope[key], kinds):
            raise ModelFileError(
                f"{shown!r}: header key {key!r} must be {what}; got {type(envelope[key]).__name__}."
            )
    return envelope["state"], envelope["arrays"]


def _check_entry(
    name: str, entry: Any, shown: str, max_elements: int
) -> tuple[tuple[int, ...], np.dtype, str]:
    where = f"{shown!r}: array {name!r}"
    if not _NAME.fullmatch(name):
        raise ModelFileError(
            f"{shown!r}: the header names an array {name!r}, which is not "
            "an allowed name (1 to 128 letters, digits or '_')."
        )
    if not isinstance(entry, dict):
        raise ModelFileError(
            f"{where}: its header entry must be a JSON object; got {type(entry).__name__}."
        )
    for key in ("shape", "dtype", "sha256"):
        if key not in entry:
            raise ModelFileError(f"{where}: its header entry has no required key {key!r}.")
    shape = entry["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ModelFileError(
            f"{where}: 'shape' must be a list of at most {_MAX_NDIM} non-negative integers; "
            f"got {shape!r}."[:500]
        )
    if entry["dtype"] not in _DTYPES:
        raise ModelFileError(
            f"{where}: 'dtype' must be one of {sorted(_DTYPES)}; got {entry['dtype']!r}."
        )
    if not isinstance(entry["sha256"], str) or not _HEX64.fullmatch(entry["sha256"]):
        raise ModelFileError(
            f"{where}: 'sha256' must be 64 hex digits; got {entry['sha256']!r}."[:500]
        )
    n = math.prod(shape)
    if n > max_elements:
        raise ModelFileError(
            f"{where}: the file claims shape {tuple(shape)}, {n} elements, more than the limit "
            f"of {max_elements} elements (max_elements). The file is damaged or crafted; if "
            "you trust it, read it with a larger max_elements."
        )
    return tuple(shape), _DTYPES[entry["dtype"]], entry["sha256"]


def _read_array(
    zf: zipfile.ZipFile,
    names: set[str],
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    sha256: str,
    shown: str,
) -> np.ndarray:
    member = f"{name}.npy"
    where = f"{shown!r}: array {name!r}"
    if member not in names:
        raise ModelFileError(
            f"{where} is named in the header but the file has no member "
            f"{member!r}: it is damaged or truncated."
        )
    info = _member(zf, member, shown)
    nbytes = math.prod(shape) * dtype.itemsize
    if not nbytes <= info.file_size <= nbytes + _NPY_HEADER_CAP:
        raise ModelFileError(
            f"{where}: member {member!r} claims {info.file_size} bytes uncompressed, but an "
            f"array of shape {shape} ({dtype.name}) takes {nbytes} bytes plus a short "
            "header: the file is damaged or crafted."
        )
    with _reading(shown, f"member {member!r}"), zf.open(info) as raw:
        fh = _Capped(raw, _NPY_HEADER_CAP)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            npy_shape, fortran, npy_dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            npy_shape, fortran, npy_dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ModelFileError(
                f"{where}: member {member!r} has .npy format version "
                f"{version}; model files use 1.0 or 2.0."
            )
        if npy_shape != shape or npy_dtype != dtype or fortran:
            raise ModelFileError(
                f"{where}: member {member!r} holds shape {npy_shape} ({npy_dtype}"
                f"{', Fortran order' if fortran else ''}) but the header declares shape "
                f"{shape} ({dtype.name}): the file is damaged or crafted."
            )
        if info.file_size != fh.count + nbytes:
            raise ModelFileError(
                f"{where}: member {member!r} claims {info.file_size} bytes uncompressed, but "
                f"its .npy header and data take {fh.count + nbytes}: the file is damaged or "
                "crafted."
            )
        try:
            out = np.empty(shape, dtype=dtype)
        except MemoryError as err:
            raise ModelFileError(
                f"{where}: an array of shape {shape} ({nbytes} bytes) does not fit in memory."
            ) from err
        flat = out.reshape(-1).view(np.uint8)
        digest = hashlib.sha256()
        pos = 0
        while pos < nbytes:  # never decompress more than the bytes still expected
            chunk = raw.read(min(_CHUNK, nbytes - pos))
            if not chunk:
                raise ModelFileError(
                    f"{where}: member {member!r} ends after {pos} of "
                    f"{nbytes} bytes: the file is truncated."
                )
            flat[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            digest.update(chunk)
            pos += len(chunk)
        if raw.read(1):
            raise ModelFileError(
                f"{where}: member {member!r} holds more data than its "
                "header declares: the file is damaged or crafted."
            )
    if digest.hexdigest() != sha256:
        raise ModelFileError(f"{where} does not match its sha256 checksum: the file is damaged.")
    return out


def read_model_file(
    path,
    *,
    expected: dict[str, int] | None = None,
    exclusive: bool = False,
    max_elements: int = MAX_ARRAY_ELEMENTS,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file written by :func:`write_model_file`, checking everything.

    Nothing is allocated in proportion to a size the file claims before that
    size is checked: the header is read with a bounded read and refused above
    :data:`MAX_HEADER_BYTES`; an array is refused above ``max_elements``
    elements, or when its ``.npy`` header or its zip member's declared size
    disagree with the header; and its data are decompressed in chunks, never
    beyond the expected number of bytes. No pickle is ever loaded.

    Parameters
    ----------
    path : str or path-like
        The model file. Error messages name it as given.
    expected : dict of str to int, optional
        Arrays that must be present, mapped to their number of dimensions.
    exclusive : bool, default=False
        With ``expected``, refuse (never read) any other array in the file.
    max_elements : int, default=MAX_ARRAY_ELEMENTS
        The largest number of elements one array may have (2**28 by default,
        i.e. 2 GiB of float64); all arrays together may have twice as many.
        Raise it only for a file you trust.

    Returns
    -------
    state : dict
        The ``header`` given to :func:`write_model_file`.
    arrays : dict of str to ndarray
        The arrays, with their dtypes (``float64`` or ``int64``) and shapes,
        bit-identical to those written.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    PermissionError
        The file cannot be opened for reading.
    InvalidParameterError
        ``max_elements`` is not a non-negative integer.
    ModelFileError
        The file is empty, a directory, a text/structure file, not a zip
        archive, damaged or truncated (a checksum does not match, a member is
        missing or inconsistent), crafted (a size above the limits or sizes
        that disagree), written by a newer gapkit (``schema_version`` above
        :data:`SCHEMA_VERSION`), or an array named in ``expected`` is missing
        or has another number of dimensions.

    Notes
    -----
    Files written by :func:`save_model` (the earlier layout, with the header
    stored as a ``header.npy`` byte array) are not read by this function: it
    says so. Load them with the gapkit version that wrote them and save them
    again.
    """
    shown = os.fsdecode(os.fspath(path))
    try:
        limit = -1 if isinstance(max_elements, bool) else operator.index(max_elements)
    except TypeError:
        limit = -1
    if limit < 0:
        raise InvalidParameterError(
            f"read_model_file: 'max_elements' must be an integer >= 0; got {max_elements!r}."
        )
    p = Path(shown)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, f"No model file at {shown!r}")
    if p.is_dir():
        raise ModelFileError(f"{shown!r} is a directory, not a gapkit model file.")
    if not p.is_file():
        raise ModelFileError(f"{shown!r} is not a regular file, so not a gapkit model file.")
    with open(p, "rb") as fh:
        lead = fh.read(_SNIFF)
        if not lead:
            raise ModelFileError(
                f"{shown!r} is empty (0 bytes), not a gapkit model file; was a save interrupted?"
            )
        if not lead.startswith(b"PK\x03\x04"):
            if _looks_like_text(lead):
                raise ModelFileError(
                    f"{shown!r} is not a gapkit model file: it looks like a text/structure "
                    "file (.xyz); a model file is written by GAPRegressor.save / gapkit fit -o."
                )
            raise ModelFileError(
                f"{shown!r} is not a gapkit model file: it is not a zip archive (it starts "
                f"with {lead[:8]!r})."
            )
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            OSError,
            ValueError,
            struct.error,
            OverflowError,
        ) as err:
            raise ModelFileError(
                f"{shown!r} is not a readable gapkit model file: the zip archive is damaged "
                f"or truncated ({err})."
            ) from err
        with zf:
            return _read_zip(zf, shown, expected, limit, exclusive)


def _read_zip(
    zf: zipfile.ZipFile,
    shown: str,
    expected: dict[str, int] | None,
    max_elements: int,
    exclusive: bool = False,
) -> tuple[dict, dict[str, np.ndarray]]:
    names = set(zf.namelist())
    if _HEADER_MEMBER not in names:
        if "header.npy" in names:
            raise ModelFileError(
                f"{shown!r} uses the earlier gapkit model layout (header.npy), which this "
                "reader does not read; load it with the gapkit version that wrote it and "
                "save it again."
            )
        raise ModelFileError(
            f"{shown!r} is not a gapkit model file: it is a zip archive without "
            f"{_HEADER_MEMBER!r}; a model file is written by GAPRegressor.save / gapkit fit -o."
        )
    if _CHECKSUM_MEMBER not in names:
        raise ModelFileError(
            f"{shown!r}: the file has no {_CHECKSUM_MEMBER!r} member: it is "
            "damaged or not written by gapkit."
        )
    blob = _read_small(zf, _member(zf, _HEADER_MEMBER, shown), MAX_HEADER_BYTES, shown)
    recorded = _read_small(zf, _member(zf, _CHECKSUM_MEMBER, shown), 128, shown)
    recorded_text = recorded.decode("ascii", errors="replace").strip()
    if not _HEX64.fullmatch(recorded_text):
        raise ModelFileError(
            f"{shown!r}: {_CHECKSUM_MEMBER!r} does not hold a sha256 checksum: the file is damaged."
        )
    if hashlib.sha256(blob).hexdigest() != recorded_text:
        raise ModelFileError(
            f"{shown!r}: the header does not match its sha256 checksum "
            f"({_CHECKSUM_MEMBER}): the file is damaged."
        )
    try:
        envelope = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ModelFileError(
            f"{shown!r}: {_HEADER_MEMBER!r} is not valid UTF-8 JSON: {err}."
        ) from err
    state, entries = _check_envelope(envelope, shown)
    declared = {
        name: _check_entry(name, entry, shown, max_elements) for name, entry in entries.items()
    }
    if exclusive and expected is not None and set(declared) - set(expected):
        extra = sorted(set(declared) - set(expected))
        raise ModelFileError(
            f"{shown!r}: the file holds arrays this model does not have "
            f"({', '.join(repr(n) for n in extra)}): it is not a gapkit model of this version."
        )
    total = sum(int(np.prod(shape, dtype=object)) for shape, _, _ in declared.values())
    if total > 2 * max_elements:
        raise ModelFileError(
            f"{shown!r}: the arrays declare {total} elements in all, above twice the limit "
            f"of {max_elements} per array; raise max_elements only for a file you trust."
        )
    for name, ndim in (expected or {}).items():
        if name not in declared:
            raise ModelFileError(
                f"{shown!r}: the file has no array {name!r}; it is not a complete gapkit model."
            )
        if len(declared[name][0]) != ndim:
            raise ModelFileError(
                f"{shown!r}: array {name!r} must have {ndim} dimension(s); the file holds "
                f"shape {declared[name][0]}."
            )
    arrays = {
        name: _read_array(zf, names, name, shape, dtype, sha, shown)
        for name, (shape, dtype, sha) in declared.items()
    }
    return state, arrays


# --------------------------------------------------------------------------- earlier layout


def is_model_file(path) -> bool:
    """True when ``path`` is a regular file that starts as a gapkit model file does
    (a zip archive holding a gapkit header). Reads at most the header."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            if _HEADER_MEMBER not in zf.namelist():
                return False
            blob = _read_small(zf, _member(zf, _HEADER_MEMBER, str(p)), MAX_HEADER_BYTES, str(p))
        envelope = json.loads(blob.decode("utf-8"))
    except (ModelFileError, zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return isinstance(envelope, dict) and envelope.get("format") == _FORMAT


def read_structures(path, index: str = ":") -> list:
    """Read structures (extxyz or anything ASE reads) as a list of Atoms.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    InvalidStructureError
        ASE cannot parse the file, or it holds no structures.
    """
    from ase.io import read

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No structure file at {path}.")
    try:
        frames = read(path, index)
    except Exception as err:  # ASE raises many different types here
        raise InvalidStructureError(f"Could not read structures from {path}: {err}") from err
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InvalidStructureError(f"{path} holds no structures.")
    return frames
