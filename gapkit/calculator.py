"""ASE calculator around a fitted :class:`~gapkit.GAPRegressor`: a thin adapter.

What it was told lives in ``self.parameters`` (so ``calc.set(uncertainty=True)``
works and ``todict()`` reports it), and it reads the estimator's fitted model
at every call: when the model changes (``partial_fit``, an incremental update,
``calibrate``, a refit) its version changes and cached results are dropped.
"""

from __future__ import annotations

from ase.calculators.calculator import (
    Calculator,
    CalculatorSetupError,
    PropertyNotImplementedError,
    all_changes,
)
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._validation import check_atoms, is_bulk
from .backend import DEVICES, resolve_device
from .exceptions import UnknownSpeciesError

__all__ = ["GAPCalculator"]


class GAPCalculator(Calculator):
    """ASE calculator for a fitted GAP model.

    Parameters
    ----------
    model : GAPRegressor
        A fitted model (or one returned by :func:`gapkit.load`). It is not
        copied: the calculator follows its later updates.
    uncertainty : bool, default=False
        Also store the posterior standard deviations as extra results:
        ``energy_std`` (eV), ``energies_std`` (eV per atom), ``forces_std``
        (eV/Å per component) and, for bulk cells, ``stress_std`` (eV/Å³, Voigt),
        in the model's fitted ``variance`` form and ``std_scale_``.
    device : {"cpu", "cuda", "auto"}, default=None
        Where predictions run (see ``GAPRegressor(device=...)``); by default
        the model's own setting. The model is not modified.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Notes
    -----
    Results: ``energy`` and ``free_energy`` (eV), ``energies`` (per-atom
    energies ``e0(Z_i) + eps_i``, eV), ``forces`` (eV/Å) and, for cells
    periodic in three directions, ``stress`` (eV/Å³, ASE sign, Voigt order).
    Everything is computed in one descriptor pass whatever is asked for, and
    cached by ASE until the atoms, a parameter or the model change.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from gapkit import load
    >>> atoms = bulk("Cu", cubic=True)          # doctest: +SKIP
    >>> atoms.calc = load("cu.gap").calculator()  # doctest: +SKIP
    >>> atoms.get_potential_energy()            # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {"uncertainty": False, "device": None}

    def __init__(self, model, *, uncertainty: bool = False, device: str | None = None, **kwargs):
        try:
            check_is_fitted(model)
        except (NotFittedError, TypeError) as err:
            raise CalculatorSetupError(
                "GAPCalculator: the model is not fitted; call fit() or gapkit.load() first."
            ) from err
        if device is not None:
            resolve_device(device, "GAPCalculator")  # a clear error now, not at the first step
        super().__init__(uncertainty=uncertainty, device=device, **kwargs)
        self.model = model
        self._version = None  # of the fitted model the cached results came from

    def set(self, **kwargs):
        """Change ``uncertainty`` or ``device``; cached results are dropped."""
        if kwargs.get("device") is not None and kwargs["device"] not in DEVICES:
            raise CalculatorSetupError(
                f"GAPCalculator: 'device' must be one of {list(DEVICES)}; got {kwargs['device']!r}."
            )
        changed = super().set(**kwargs)
        if changed:
            self.reset()
        return changed

    def todict(self, skip_default: bool = False) -> dict:
        """The calculator's parameters (``uncertainty``, ``device``)."""
        return super().todict(skip_default=skip_default)

    @property
    def device(self) -> str:
        """The device setting predictions use."""
        return self.parameters.get("device") or self.model.device

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        changes = super().check_state(atoms, tol)
        if self.model.fitted_.version != self._version and "model" not in changes:
            changes = [*changes, "model"]
        return changes

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        properties = ["energy"] if properties is None else properties
        super().calculate(atoms, properties, system_changes)
        check_atoms(self.atoms, "GAPCalculator: the structure")
        bulk = is_bulk(self.atoms)
        if "stress" in properties and not bulk:
            raise PropertyNotImplementedError(
                "GAPCalculator: stress needs a cell periodic in all three directions."
            )
        fitted = self.model.fitted_
        try:
            fitted.check_species([self.atoms], "GAPCalculator")
        except UnknownSpeciesError as err:
            raise CalculatorSetupError(str(err)) from err
        uncertainty = bool(self.parameters.get("uncertainty"))
        backend = resolve_device(self.device, "GAPCalculator")
        (res,) = fitted.predict(
            [self.atoms],
            forces=True,
            stress=bulk,
            std=uncertainty,
            backend=backend,
            n_jobs=self.model.n_jobs,
        )
        self._version = fitted.version
        self.results["energy"] = res["energy"]
        self.results["free_energy"] = res["energy"]
        self.results["energies"] = res["energies"]
        self.results["forces"] = res["forces"]
        if bulk:
            self.results["stress"] = res["stress"]
        if uncertainty:
            for key in ("energy_std", "energies_std", "forces_std", "stress_std"):
                if key in res:
                    self.results[key] = res[key]
