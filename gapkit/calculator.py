"""ASE calculator around a fitted :class:`~gapkit.GAPRegressor`."""

from __future__ import annotations

import copy

from ase.calculators.calculator import (
    Calculator,
    CalculatorSetupError,
    PropertyNotImplementedError,
    all_changes,
)

from ._validation import check_atoms, is_bulk
from .backend import resolve_device
from .exceptions import UnknownSpeciesError

__all__ = ["GAPCalculator"]


class GAPCalculator(Calculator):
    """ASE calculator for a fitted GAP model.

    Parameters
    ----------
    model : GAPRegressor
        A fitted model (or one returned by :func:`gapkit.load`).
    uncertainty : bool, default=False
        Also store the posterior standard deviations as extra results:
        ``energy_std`` (eV), ``energies_std`` (eV per atom), ``forces_std``
        (eV/Å per component) and, for bulk cells, ``stress_std`` (eV/Å³, Voigt),
        in the model's ``variance`` form.
    device : {"cpu", "cuda", "auto"}, default=None
        Where predictions run (see ``GAPRegressor(device=...)``); by default
        the model's own setting. The model passed in is not modified.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Notes
    -----
    Results: ``energy`` and ``free_energy`` (eV), ``energies`` (per-atom
    energies ``e0(Z_i) + eps_i``, eV), ``forces`` (eV/Å) and, for cells
    periodic in three directions, ``stress`` (eV/Å³, ASE sign, Voigt order).
    Everything is computed in one descriptor pass whatever is asked for, and
    cached by ASE until the atoms change.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from gapkit import load
    >>> atoms = bulk("Cu", cubic=True)          # doctest: +SKIP
    >>> atoms.calc = load("cu.gap").calculator()  # doctest: +SKIP
    >>> atoms.get_potential_energy()            # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, *, uncertainty: bool = False, device: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if device is not None and device != model.device:
            resolve_device(device, "GAPCalculator")  # a clear error now, not at the first step
            model = copy.copy(model)
            model.device = device
        self.model = model
        self.uncertainty = uncertainty

    @property
    def device(self) -> str:
        """The device setting predictions use."""
        return self.model.device

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        properties = ["energy"] if properties is None else properties
        super().calculate(atoms, properties, system_changes)
        check_atoms(self.atoms, "GAPCalculator: the structure")
        bulk = is_bulk(self.atoms)
        if "stress" in properties and not bulk:
            raise PropertyNotImplementedError(
                "GAPCalculator: stress needs a cell periodic in all three directions."
            )
        try:
            self.model._check_known_species([self.atoms])
        except UnknownSpeciesError as err:
            raise CalculatorSetupError(str(err)) from err
        (res,) = self.model._predict_frames(
            [self.atoms], forces=True, stress=bulk, std=self.uncertainty
        )
        self.results["energy"] = res["energy"]
        self.results["free_energy"] = res["energy"]
        self.results["energies"] = res["energies"]
        self.results["forces"] = res["forces"]
        if bulk:
            self.results["stress"] = res["stress"]
        if self.uncertainty:
            for key in ("energy_std", "energies_std", "forces_std", "stress_std"):
                if key in res:
                    self.results[key] = res[key]
