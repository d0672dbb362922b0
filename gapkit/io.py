"""Model files (JSON header + arrays, never pickle) and reading data sets."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import resolve_device
from .exceptions import InvalidStructureError, ModelFileError

__all__ = ["save_model", "load", "read_structures", "SCHEMA_VERSION"]

#: Version of the model-file layout written by this gapkit.
SCHEMA_VERSION = 1
_FORMAT = "gapkit-model"
_ARRAYS = {
    "sparse_features": 2,
    "sparse_numbers": 1,
    "delta": 1,
    "coefficients": 1,
    "r_factor": 2,
    "qtb": 1,
}


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def save_model(model, path) -> None:
    """Write a fitted :class:`~gapkit.GAPRegressor` to ``path``.

    The file is a zip archive (NumPy ``.npz``) holding ``header.json`` and
    one ``.npy`` array per fitted quantity; arrays are loaded with
    ``allow_pickle=False``, so reading a model never runs code. The file is
    written to a temporary name and renamed, so a failure leaves any existing
    file untouched.
    """
    from importlib.metadata import version

    from sklearn.utils.validation import check_is_fitted

    from . import __version__

    check_is_fitted(model, "coefficients_")
    params = model.get_params(deep=False)
    params["descriptor"] = model.descriptor_.get_params()
    params["baseline"] = None if model.baseline is None else model.baseline_.todict()
    params["scheduler"] = None  # where it ran is not part of the model
    arrays = {
        "sparse_features": model.sparse_features_,
        "sparse_numbers": model.sparse_numbers_.astype(np.int64),
        "delta": model.delta_,
        "coefficients": model.coefficients_,
        "r_factor": model.r_factor_,
        "qtb": model.qtb_,
    }
    header = {
        "format": _FORMAT,
        "schema_version": SCHEMA_VERSION,
        "gapkit_version": __version__,
        "dscribe_version": version("dscribe"),
        "params": params,
        "species": model.species_,
        "e0": model.e0_,
        "n_observations": model.n_observations_,
        "std_scale": float(getattr(model, "std_scale_", 1.0)),
        "residual": float(model.residual_),
        "hyperparameters": model.hyperparameters_,
        "log_marginal_likelihood": model.log_marginal_likelihood_,
        "checksums": {k: _sha256(v) for k, v in arrays.items()},
    }
    text = json.dumps(header, indent=1, sort_keys=True)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, header=np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path, device: str | None = None):
    """Read a model written by :meth:`GAPRegressor.save`.

    Parameters
    ----------
    path : str or path-like
    device : {"cpu", "cuda", "auto"}, optional
        Where the loaded model computes; by default the ``device`` it was
        saved with (models are portable: the arrays are stored on the host).

    Returns
    -------
    GAPRegressor
        A fitted model giving the same predictions as the saved one.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelFileError
        The file is not a gapkit model, is damaged or truncated, or was
        written by a newer schema than this gapkit reads.
    """
    from .descriptors import SOAP
    from .estimator import GAPRegressor

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No model file at {path}.")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "header" not in data.files:
                raise ModelFileError(f"{path} is not a gapkit model file (no header).")
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            arrays = {k: data[k] for k in _ARRAYS if k in data.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as err:
        raise ModelFileError(
            f"{path} is not a readable gapkit model file (damaged or truncated?): {err}"
        ) from err
    if header.get("format") != _FORMAT:
        raise ModelFileError(f"{path} is not a gapkit model file.")
    version = header.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ModelFileError(
            f"{path} was written with model schema {version}, newer than the schema "
            f"{SCHEMA_VERSION} this gapkit reads; upgrade gapkit."
        )
    for name, ndim in _ARRAYS.items():
        if name not in arrays or arrays[name].ndim != ndim:
            raise ModelFileError(f"{path}: array {name!r} is missing or has the wrong shape.")
        if _sha256(arrays[name]) != header["checksums"].get(name):
            raise ModelFileError(f"{path}: array {name!r} does not match its checksum (damaged).")
    m = len(arrays["coefficients"])
    if (
        arrays["sparse_features"].shape[0] != m
        or arrays["sparse_numbers"].shape != (m,)
        or arrays["delta"].shape != (m,)
        or arrays["r_factor"].shape != (m, m)
        or arrays["qtb"].shape != (m,)
    ):
        raise ModelFileError(f"{path}: the arrays' shapes do not agree with each other.")

    params = dict(header["params"])
    if device is not None:
        params["device"] = device
    descriptor = SOAP(**params.pop("descriptor"))
    baseline = params.pop("baseline")
    model = GAPRegressor(descriptor=descriptor, **params)
    if baseline is not None:
        from .electrostatics import calculator_from_dict

        model.baseline = calculator_from_dict(baseline)
        model.baseline_ = calculator_from_dict(baseline)
    model.descriptor_ = SOAP(**descriptor.get_params())
    if descriptor.n_features != arrays["sparse_features"].shape[1]:
        raise ModelFileError(f"{path}: descriptor length does not match the sparse points.")
    model.species_ = list(header["species"])
    model.e0_ = {k: float(v) for k, v in header["e0"].items()}
    model.n_observations_ = dict(header["n_observations"])
    model.sparse_features_ = arrays["sparse_features"]
    model.sparse_numbers_ = arrays["sparse_numbers"].astype(int)
    model.delta_ = arrays["delta"]
    model.coefficients_ = arrays["coefficients"]
    model.r_factor_ = arrays["r_factor"]
    model.sparse_cholesky_ = model._sparse_cholesky(resolve_device("cpu"))
    model.std_scale_ = float(header.get("std_scale", 1.0))
    model.qtb_ = arrays["qtb"]
    model.residual_ = float(header["residual"])
    model.hyperparameters_ = header["hyperparameters"]
    model.log_marginal_likelihood_ = float(header["log_marginal_likelihood"])
    return model


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
