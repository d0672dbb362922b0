"""Compiled parallel loops that survive ``fork``.

numba's parallel loops run on GNU OpenMP here (no TBB), and GNU OpenMP aborts
a process forked from one that has used it ("fork() called from a process
already using GNU OpenMP"). Multiprocessing pools and joblib's fork-based
workers do exactly that. Every call site of a ``parallel=True`` kernel
therefore goes through :func:`fork_safe`, which in a forked child hands back
a serial copy of the kernel (same options, no ``parallel``; compiled there on
first use).
"""

from __future__ import annotations

import os

import numba as nb

__all__ = ["fork_safe"]

_in_forked_child = False
_serial_kernels: dict = {}


def _mark_forked_child() -> None:
    global _in_forked_child
    _in_forked_child = True


os.register_at_fork(after_in_child=_mark_forked_child)


def fork_safe(kernel):
    """``kernel`` itself, or its serial twin in a forked child."""
    if not _in_forked_child:
        return kernel
    serial = _serial_kernels.get(kernel)
    if serial is None:
        options = {
            k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")
        }  # njit is nopython already
        serial = _serial_kernels[kernel] = nb.njit(**options)(kernel.py_func)
    return serial
