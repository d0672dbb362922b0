"""Energy per isolated atom (``e0``): fitted on the composition, zero, or given."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ._validation import Labels
from .exceptions import InvalidParameterError, LabelWarning

__all__ = ["fit_e0"]


def fit_e0(
    e0, frames: Sequence[Atoms], labels: Sequence[Labels], species: Sequence[str]
) -> dict[str, float]:
    """``e0`` per species.

    Parameters
    ----------
    e0 : "fit", "zero" or dict
        ``"fit"``: least squares of the energy labels on the composition
        (counts of each species); ``"zero"``; or energies per species (eV).
    frames, labels : sequences
        Training structures and their labels.
    species : sequence of str

    Returns
    -------
    dict of str to float

    Warns
    -----
    LabelWarning
        ``"fit"`` with no energy label at all: e0 = 0 is used, so predicted
        energies have an arbitrary zero.
    """
    if e0 == "zero":
        return dict.fromkeys(species, 0.0)
    if isinstance(e0, dict):
        missing = [s for s in species if s not in e0]
        if missing:
            raise InvalidParameterError(
                f"GAPRegressor: 'e0' has no value for {', '.join(missing)}."
            )
        return {s: float(e0[s]) for s in species}
    rows = [
        [a.get_chemical_symbols().count(s) for s in species]
        for a, lab in zip(frames, labels, strict=True)
        if lab.energy is not None
    ]
    if not rows:
        warnings.warn(
            "GAPRegressor.fit: no structure has an energy label, so e0 cannot be fitted; "
            "using e0 = 0 for every species (predicted energies then have an arbitrary "
            "zero). Pass e0={'Cu': ..., ...} (isolated-atom energies) or e0='zero' to say so.",
            LabelWarning,
            stacklevel=4,
        )
        return dict.fromkeys(species, 0.0)
    energies = [lab.energy for lab in labels if lab.energy is not None]
    values, *_ = np.linalg.lstsq(np.array(rows, float), np.array(energies), rcond=None)
    return {s: float(v) for s, v in zip(species, values, strict=True)}
