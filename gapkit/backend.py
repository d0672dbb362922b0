"""Array namespaces and devices: NumPy on the CPU, CuPy on an NVIDIA GPU.

gapkit's numeric code (kernels, design-matrix rows, the QR solve, predictions,
variances, particle-mesh Ewald) is written once against the `array API standard
<https://data-apis.org/array-api/>`_: each function takes its namespace from its
input arrays with :func:`array_api_compat.array_namespace`, so the same code runs
on NumPy, CuPy and ``array_api_strict`` (the reference namespace the tests use
to prove that nothing library-specific slipped in).

The standard lacks a few operations gapkit needs: a scatter-add, triangular
solves and the R factor of a QR alone. The helpers below provide them and
dispatch to the fastest routine each library has (SciPy for NumPy, cupyx for
CuPy), with a plain array-API fallback for any other namespace.

Descriptors stay on DScribe on the CPU; :class:`Backend` moves their arrays to
the device chosen with ``device="cpu" | "cuda" | "auto"``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import scipy.linalg
import scipy.sparse

from .exceptions import DeviceUnavailableError, InvalidParameterError

__all__ = [
    "DEVICES",
    "Backend",
    "resolve_device",
    "cuda_available",
    "namespace",
    "to_numpy",
    "index_add",
    "solve_triangular",
    "qr_r",
]

logger = logging.getLogger("gapkit")

#: Values accepted by every ``device`` option.
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Backend:
    """An array namespace bound to a device.

    Attributes
    ----------
    device : {"cpu", "cuda"}
        Where the numeric work runs.
    xp : module
        The array namespace (array_api_compat's wrapper of NumPy or CuPy).
    """

    device: str
    xp: Any

    def __reduce__(self):
        # the namespace is a module, which does not pickle: rebuild it from its name, so
        # that whatever holds a backend (a calculator's cache, say) pickles and deep-copies
        return _rebuild_backend, (self.device, self.xp.__name__)

    @property
    def is_numpy(self) -> bool:
        """True when the namespace is NumPy (no transfers needed)."""
        return array_api_compat.is_numpy_namespace(self.xp)

    def asarray(self, x, dtype=None):
        """``x`` as an array of this backend (copied to the device when needed)."""
        if self.is_numpy:
            return np.asarray(x, dtype=dtype)
        return self.xp.asarray(x, dtype=dtype)


def _rebuild_backend(device: str, module: str) -> Backend:
    return Backend(device, importlib.import_module(module))


def cuda_available() -> tuple[bool, str]:
    """Whether CuPy imports and sees a CUDA device, and a line that says why (not)."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'gapkit[gpu]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError without a driver
        return False, f"CuPy sees no CUDA device ({err})"
    if n < 1:
        return False, "CuPy sees no CUDA device"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception:  # pragma: no cover - informational only
        name = "CUDA device"
    return True, f"{name} through CuPy {cupy.__version__}"


def resolve_device(device: str, owner: str = "gapkit") -> Backend:
    """The backend for a ``device`` option.

    Parameters
    ----------
    device : {"cpu", "cuda", "auto"}
        ``"auto"`` picks the GPU when CuPy imports and sees a device, else
        NumPy; the choice is logged on the ``"gapkit"`` logger (level INFO).
    owner : str
        Named in error messages.

    Raises
    ------
    InvalidParameterError
        For any other value.
    DeviceUnavailableError
        For ``"cuda"`` without CuPy or without a device.
    """
    if device not in DEVICES:
        raise InvalidParameterError(
            f"{owner}: 'device' must be one of {', '.join(map(repr, DEVICES))}; got {device!r}."
        )
    if device == "cpu":
        return Backend("cpu", array_api_compat.array_namespace(np.empty(0)))
    ok, why = cuda_available()
    if device == "cuda" and not ok:
        raise DeviceUnavailableError(f"{owner}: device='cuda' was asked for but {why}.")
    if not ok:
        logger.info("%s: device='auto' chose the CPU (NumPy): %s.", owner, why)
        return Backend("cpu", array_api_compat.array_namespace(np.empty(0)))
    import cupy

    if device == "auto":
        logger.info("%s: device='auto' chose the GPU: %s.", owner, why)
    return Backend("cuda", array_api_compat.array_namespace(cupy.empty(0)))


def namespace(*arrays):
    """The array namespace of the array arguments.

    Lists, tuples and Python scalars are ignored (they are NumPy inputs); NumPy
    when none of the arguments is an array.
    """
    found = [a for a in arrays if array_api_compat.is_array_api_obj(a)]
    if not found:
        return array_api_compat.array_namespace(np.empty(0))
    return array_api_compat.array_namespace(*found)


def to_numpy(x) -> np.ndarray:
    """Any backend's array as a NumPy array on the host."""
    if array_api_compat.is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def index_add(xp, index, values, n: int):
    """Sum the rows of ``values`` into ``n`` bins: ``out[index[k]] += values[k]``.

    Parameters
    ----------
    index : int array of shape (p,)
    values : array of shape (p, ...)
    n : int
        Number of bins (rows of the result).

    Returns
    -------
    array of shape (n, ...)
    """
    shape = (n, *values.shape[1:])
    flat = xp.reshape(values, (values.shape[0], -1))
    if array_api_compat.is_numpy_namespace(xp):
        idx = np.asarray(index)
        scatter = scipy.sparse.csr_matrix(
            (np.ones(len(idx)), (idx, np.arange(len(idx)))), shape=(n, len(idx))
        )
        return np.reshape(scatter @ np.asarray(flat), shape)
    if array_api_compat.is_cupy_namespace(xp):
        import cupyx

        out = xp.zeros((n, flat.shape[1]), dtype=flat.dtype)
        cupyx.scatter_add(out, index, flat)
        return xp.reshape(out, shape)
    # plain array API: a one-hot matrix product (fine for the sizes tests use)
    dev = array_api_compat.device(flat)
    onehot = xp.astype(xp.arange(n, device=dev)[:, None] == index[None, :], flat.dtype)
    return xp.reshape(onehot @ flat, shape)


def solve_triangular(xp, a, b, *, lower: bool, trans: bool = False):
    """Solve ``a x = b`` (or ``a^T x = b`` with ``trans``) for triangular ``a``."""
    if array_api_compat.is_numpy_namespace(xp):
        return scipy.linalg.solve_triangular(
            a, b, lower=lower, trans="T" if trans else "N", check_finite=False
        )
    if array_api_compat.is_cupy_namespace(xp):
        import cupyx.scipy.linalg

        return cupyx.scipy.linalg.solve_triangular(
            a, b, lower=lower, trans="T" if trans else "N", check_finite=False
        )
    return xp.linalg.solve(a.T if trans else a, b)


def qr_r(xp, a):
    """The upper-triangular R of ``a = QR`` (shape ``(min(m, n), n)``); Q is not formed."""
    if array_api_compat.is_numpy_namespace(xp):
        return scipy.linalg.qr(a, mode="r", overwrite_a=True, check_finite=False)[0]
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        return cupy.linalg.qr(a, mode="r")
    return xp.linalg.qr(a, mode="reduced")[1]
