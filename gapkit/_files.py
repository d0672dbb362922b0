"""Writing files without losing what is already there.

Two rules hold for every file gapkit writes:

- An output path is checked *before* the work that produces it starts
  (:func:`check_output_path`): a fit of an hour must not end in "directory not
  found", and the message names the path the user gave, not a temporary file.
- A file is replaced atomically (:func:`atomic_write`): the new content goes to
  a temporary file in the same directory, is synced and renamed over the
  target, so a crash or a full disk leaves the old file intact. The file gets
  the permissions the user's umask gives a new file (``mkstemp`` alone would
  give 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .exceptions import InvalidParameterError

__all__ = ["check_output_path", "atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path, owner: str, *, overwrite: bool = True) -> Path:
    """Check that ``path`` can be written, before any work is done.

    Parameters
    ----------
    path : str or path-like
        The output file as the user gave it.
    owner : str
        Prefix of the error message (``"gapkit fit"``, ``"GAPRegressor.save"``).
    overwrite : bool, default=True
        Whether an existing file may be replaced.

    Returns
    -------
    Path

    Raises
    ------
    InvalidParameterError
        The directory does not exist or is not writable, the path is a
        directory, or the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InvalidParameterError(f"{owner}: output {str(path)!r} is a directory.")
    if not parent.is_dir():
        raise InvalidParameterError(
            f"{owner}: cannot write {str(path)!r}: directory {str(parent)!r} does not exist."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidParameterError(
            f"{owner}: cannot write {str(path)!r}: directory {str(parent)!r} is not writable."
        )
    if path.exists() and not path.is_file():
        raise InvalidParameterError(
            f"{owner}: {str(path)!r} exists and is not a regular file (a device, a FIFO or a "
            "socket); it is left untouched."
        )
    if path.exists():
        if not overwrite:
            raise InvalidParameterError(f"{owner}: {str(path)!r} exists already.")
        if not os.access(path, os.W_OK):
            raise InvalidParameterError(f"{owner}: cannot write {str(path)!r}: not writable.")
    return path


def atomic_write(path, write: Callable[[IO[bytes]], None], owner: str) -> Path:
    """Write ``path`` through ``write(fh)`` on a temporary file, then rename it.

    The temporary file lives in the target's directory (so the rename is
    atomic), is synced before the rename and removed on any failure; the
    result has the mode of the file it replaces, or ``0o666 & ~umask``. An
    existing file at ``path`` is untouched until the new one is complete.
    """
    path = check_output_path(path, owner)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # a file that is replaced keeps its mode; a new one gets the umask's
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, InvalidParameterError):
            raise OSError(
                err.errno, f"{owner}: could not write {str(path)!r}: {err.strerror or err}"
            ) from err
        raise
    _sync_directory(parent)
    return path


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
