"""Array-namespace helpers private to :mod:`gapkit.electrostatics`.

The numeric functions take their namespace from their array arguments. Small
host-side quantities (the cell, its inverse, wave vectors, spline moduli) are
always computed with NumPy and then moved to the arrays' device, so every
namespace sees exactly the same constants.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ..backend import namespace, to_numpy

__all__ = ["array_namespace", "is_numpy", "host", "device_of", "to_device"]


def array_namespace(*arrays: Any) -> Any:
    """The namespace of the array arguments; NumPy when none is an array
    (lists, tuples and Python scalars are ignored)."""
    return namespace(*arrays)


def is_numpy(xp: Any) -> bool:
    """Whether ``xp`` is NumPy (or array_api_compat's wrapper of it)."""
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy(xp: Any) -> bool:
    """Whether ``xp`` is CuPy (or array_api_compat's wrapper of it)."""
    return array_api_compat.is_cupy_namespace(xp)


def host(x: Any, dtype: Any = float) -> np.ndarray:
    """A small array (cell, mesh) as a NumPy array on the host."""
    if array_api_compat.is_array_api_obj(x):
        x = to_numpy(x)
    return np.asarray(x, dtype=dtype)


def device_of(x: Any) -> Any:
    """The device of array ``x``."""
    return array_api_compat.device(x)


def to_device(xp: Any, x: np.ndarray, like: Any, dtype: Any = None) -> Any:
    """Host array ``x`` as an array of namespace ``xp`` on the device of ``like``."""
    if is_numpy(xp):
        return np.asarray(x, dtype=dtype)
    return xp.asarray(np.ascontiguousarray(x), dtype=dtype, device=device_of(like))
