"""Declarative constraints of GAPRegressor's parameters, checked once when ``fit`` starts.

Each entry says what a parameter may be, as a predicate and the words used in
the error message (scikit-learn's ``_parameter_constraints`` idea, one message
shape: "GAPRegressor: 'zeta' must be an integer between 1 and 64; got 0.").
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

import numpy as np

from .backend import DEVICES
from .descriptors import SOAP
from .exceptions import InvalidParameterError
from .hyperopt import OPTIMIZABLE
from .sparsify import SPARSE_METHODS

__all__ = ["MAX_DELTA", "GAP_CONSTRAINTS", "validate_params"]

#: Largest allowed energy scale delta (eV): beyond it ``delta**2 (q.q)^zeta``
#: overflows long before it means anything.
MAX_DELTA = 1e6


def _integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and bool(np.isfinite(x))


def _positive(x) -> bool:
    return _finite(x) and x > 0


def _per_species(ok: Callable) -> Callable:
    return lambda v: all(ok(x) for x in (v.values() if isinstance(v, Mapping) else [v]))


GAP_CONSTRAINTS: dict[str, tuple[Callable, str]] = {
    "descriptor": (lambda v: v is None or isinstance(v, SOAP), "a gapkit.SOAP instance or None"),
    "zeta": (lambda v: _integer(v) and 1 <= v <= 64, "an integer between 1 and 64"),
    "delta": (
        _per_species(lambda x: _positive(x) and x <= MAX_DELTA),
        f"a positive number <= {MAX_DELTA:g} eV (or a dict of them per species)",
    ),
    "n_sparse": (
        _per_species(lambda x: _integer(x) and x >= 1),
        "an integer >= 1 (or a dict of them per species)",
    ),
    "sparse_method": (lambda v: v in SPARSE_METHODS, f"one of {list(SPARSE_METHODS)}"),
    "sigma_energy": (_positive, "a positive finite number (eV/atom)"),
    "sigma_force": (_positive, "a positive finite number (eV/Å)"),
    "sigma_virial": (_positive, "a positive finite number (eV/atom)"),
    "e0": (
        lambda v: (
            (isinstance(v, str) and v in ("fit", "zero"))
            or (isinstance(v, Mapping) and all(_finite(x) and abs(x) <= 1e9 for x in v.values()))
        ),
        "'fit', 'zero' or a dict of finite energies per species (|e0| <= 1e9 eV)",
    ),
    "jitter": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "energy_key": (lambda v: v is None or isinstance(v, str), "a string or None"),
    "forces_key": (lambda v: v is None or isinstance(v, str), "a string or None"),
    "stress_key": (lambda v: v is None or isinstance(v, str), "a string or None"),
    "variance": (lambda v: v in ("dtc", "sor"), "'dtc' or 'sor'"),
    "optimize": (
        lambda v: (
            isinstance(v, bool) or (isinstance(v, (list, tuple)) and set(v) <= set(OPTIMIZABLE))
        ),
        f"a bool or a list from {list(OPTIMIZABLE)}",
    ),
    "cv": (
        lambda v: v is None or (_integer(v) and v >= 1),
        "an integer >= 1 (folds of the cross-validated std scales; 1 or None: none)",
    ),
    "scheduler": (lambda v: v is None or isinstance(v, str), "'local', an address or None"),
    "n_jobs": (lambda v: v is None or (_integer(v) and v != 0), "a non-zero integer or None"),
    "device": (lambda v: v in DEVICES, f"one of {list(DEVICES)}"),
    "random_state": (
        lambda v: v is None or (_integer(v) and v >= 0),
        "a non-negative integer or None",
    ),
    "verbose": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
}


def validate_params(params: Mapping, constraints: Mapping, owner: str) -> None:
    """Check ``params`` against ``constraints``.

    Raises
    ------
    InvalidParameterError
        The first parameter that breaks its constraint: owner, name, what is
        allowed, what was received.
    """
    for name, (ok, allowed) in constraints.items():
        value = params[name]
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise InvalidParameterError(f"{owner}: {name!r} must be {allowed}; got {value!r}.")
