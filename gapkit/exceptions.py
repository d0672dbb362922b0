"""Exceptions and warning categories raised by gapkit.

The hierarchy is kept small, and every class says *when* it is raised.
"""

from __future__ import annotations

__all__ = [
    "GapkitError",
    "InvalidParameterError",
    "InvalidStructureError",
    "MissingLabelError",
    "InvalidLabelError",
    "UnknownSpeciesError",
    "ModelFileError",
    "NumericalError",
    "DeviceUnavailableError",
    "NonNeutralWarning",
    "GapkitWarning",
    "LabelWarning",
]


class GapkitError(Exception):
    """Base class of every error gapkit raises on purpose."""


class InvalidParameterError(GapkitError, ValueError, TypeError):
    """A constructor or function argument has a value that is not allowed.

    Raised when ``fit`` (or another entry point) validates its parameters. It is
    both a :class:`ValueError` and a :class:`TypeError`, like scikit-learn's.
    """


class InvalidStructureError(GapkitError, ValueError):
    """A structure cannot be used: NaN or infinite positions, a zero-volume cell,
    overlapping atoms, an empty data set."""


class MissingLabelError(GapkitError, ValueError):
    """A structure handed to ``fit`` carries none of the labels needed
    (energy, forces or stress)."""


class InvalidLabelError(MissingLabelError):
    """A label is present but cannot be used: wrong shape or type, NaN or infinite.

    The message names the key, the structure index and what was found. A
    subclass of :class:`MissingLabelError`: an unusable label is as good as a
    missing one, and code catching the latter keeps working.
    """


class UnknownSpeciesError(GapkitError, ValueError):
    """A structure contains a chemical element the model was not fitted for
    (not in its descriptor, or in it but absent from the training data)."""


class ModelFileError(GapkitError, OSError):
    """A model file is damaged, truncated, not a gapkit model, or written by a
    newer schema than this version can read."""


class NumericalError(GapkitError, ArithmeticError):
    """A factorisation failed (for instance a sparse kernel matrix that is not
    positive definite); the message says what to change."""


class DeviceUnavailableError(GapkitError, RuntimeError):
    """``device="cuda"`` was asked for but CuPy is not installed or sees no GPU."""


class GapkitWarning(UserWarning):
    """Base class of gapkit's warnings."""


class NonNeutralWarning(GapkitWarning):
    """A periodic cell carries a net charge; a neutralising background is added."""


class LabelWarning(GapkitWarning):
    """The labels allow a fit but something is likely wrong: e.g. no energies,
    so ``e0`` cannot be fitted and the energy zero is arbitrary."""
