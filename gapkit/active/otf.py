"""On-the-fly learning: MD on the GAP, reference calls where it is unsure."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from sklearn.base import clone

from ..exceptions import InvalidParameterError
from .selection import label_structures

__all__ = ["OnTheFlyLearner", "OnTheFlyResult"]


@dataclass
class OnTheFlyResult:
    """What an on-the-fly run did.

    Attributes
    ----------
    steps : int
        MD steps completed in total (including before a restart).
    reference_calls : int
        Reference calculations made by this run (not counting those read
        back from the data file on a restart).
    n_labelled : int
        Structures in the data file.
    max_force_std : list of float
        Largest per-atom force std (eV/Å) at every step of this run.
    model : GAPRegressor
        The model at the end.
    """

    steps: int
    reference_calls: int
    n_labelled: int
    max_force_std: list = field(repr=False)
    model: object = field(repr=False)


class OnTheFlyLearner:
    """Run MD on a GAP and learn from a reference calculator when it is unsure.

    At every step the largest per-atom force uncertainty
    ``max_j |std(F_j)|`` (eV/Å, the norm of the three component stds) is
    compared with the threshold. Above it, the reference calculator labels
    the current structure, which is appended to ``data_path`` (extended XYZ,
    flushed and synced to disk *before* the model changes); the
    ``n_sparse_add`` environments of that structure with the largest
    local-energy uncertainty join the sparse points; the model is refitted on
    every labelled structure; and the dynamics continue with it.

    A run that is killed resumes from its files: the labelled structures are
    read back from ``data_path`` (no reference calculation is repeated and
    none is added twice) and the dynamics restart from the newest of the
    checkpoint and the last labelled structure.

    Parameters
    ----------
    model : GAPRegressor
        Settings of the model (fitted or not). It is cloned, not changed.
    reference : ase.calculators.calculator.Calculator
        The reference method (DFT, xTB, EMT, ...).
    threshold : float, default=0.1
        Uncertainty that triggers a reference call, in eV/Å; with
        ``relative=True`` in units of the model's force noise
        ``sigma_force`` (e.g. 2.0 means twice the expected label noise).
    relative : bool, default=False
    data_path : str or path-like, default="otf_data.xyz"
        Every reference result is appended here.
    checkpoint_path : str or path-like, default=None
        Where the MD state is saved (default: ``data_path`` with suffix
        ``.restart.xyz``).
    checkpoint_interval : int, default=20
        Steps between checkpoints.
    n_sparse_add : int, default=10
        Environments added as sparse points per reference call.
    min_interval : int, default=1
        Minimum number of steps between two reference calls.
    """

    def __init__(
        self,
        model,
        reference,
        *,
        threshold: float = 0.1,
        relative: bool = False,
        data_path="otf_data.xyz",
        checkpoint_path=None,
        checkpoint_interval: int = 20,
        n_sparse_add: int = 10,
        min_interval: int = 1,
    ):
        if not (threshold > 0):
            raise InvalidParameterError(
                f"OnTheFlyLearner: 'threshold' must be positive; got {threshold!r}."
            )
        self.model = model
        self.reference = reference
        self.threshold = threshold
        self.relative = relative
        self.data_path = Path(data_path)
        self.checkpoint_path = (
            Path(checkpoint_path) if checkpoint_path is not None
            else self.data_path.with_suffix(".restart.xyz")
        )
        self.checkpoint_interval = checkpoint_interval
        self.n_sparse_add = n_sparse_add
        self.min_interval = min_interval

    # ------------------------------------------------------------- storage
    def _append(self, atoms: Atoms) -> None:
        with open(self.data_path, "a") as fh:
            write(fh, atoms, format="extxyz")
            fh.flush()
            os.fsync(fh.fileno())

    def _checkpoint(self, atoms: Atoms, step: int) -> None:
        state = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                      momenta=atoms.get_momenta())
        state.info["otf_step"] = step
        fd, tmp = tempfile.mkstemp(dir=self.checkpoint_path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            write(fh, state, format="extxyz")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.checkpoint_path)

    def _read_labelled(self) -> list[Atoms]:
        if not self.data_path.exists() or self.data_path.stat().st_size == 0:
            return []
        return read(self.data_path, ":")

    # -------------------------------------------------------------- model
    def _threshold(self, model) -> float:
        if not self.relative:
            return float(self.threshold)
        return float(self.threshold * model.hyperparameters_["sigma_force"])

    def _refit(self, labelled: list[Atoms], sparse=None):
        model = clone(self.model)
        if sparse is None:
            return model.fit(labelled)
        return model.fit(labelled, sparse_points=sparse)

    def _grow_sparse(self, model, atoms: Atoms):
        _, local_std = model.predict_local_energies([atoms], return_std=True)
        worst = np.argsort(local_std[0])[::-1][: self.n_sparse_add]
        q_new = model.descriptor_.features(atoms)[worst]
        q = np.vstack([model.sparse_features_, q_new])
        z = np.concatenate([model.sparse_numbers_, atoms.numbers[worst]])
        _, keep = np.unique(np.round(q, 10), axis=0, return_index=True)
        keep = np.sort(keep)
        return q[keep], z[keep]

    def _label(self, atoms: Atoms, step: int) -> Atoms:
        (labelled,) = label_structures([atoms], self.reference)  # keeps the momenta
        labelled.info["otf_step"] = step
        labelled.info["config_type"] = "otf"
        return labelled

    # ---------------------------------------------------------------- run
    def run(self, atoms: Atoms, steps: int, *, timestep: float = 1.0 * units.fs,
            dynamics=VelocityVerlet, **dynamics_kwargs) -> OnTheFlyResult:
        """Run (or resume) ``steps`` MD steps in total.

        Parameters
        ----------
        atoms : ase.Atoms
            Starting structure, with momenta. Ignored when resuming from files.
        steps : int
            Total number of MD steps, counting those of an earlier run.
        timestep : float, default=1 fs
            In ASE units.
        dynamics : ASE MolecularDynamics class, default=VelocityVerlet
        **dynamics_kwargs
            Passed to ``dynamics`` (e.g. ``temperature_K``, ``friction``).
        """
        labelled = self._read_labelled()
        step, calls = 0, 0
        atoms = atoms.copy()
        if labelled:
            candidates = [labelled[-1]]
            if self.checkpoint_path.exists():
                candidates.append(read(self.checkpoint_path))
            latest = max(candidates, key=lambda a: a.info.get("otf_step", 0))
            step = int(latest.info.get("otf_step", 0))
            atoms = Atoms(latest.numbers, latest.positions, cell=latest.cell, pbc=latest.pbc,
                          momenta=latest.get_momenta())
        else:
            first = self._label(atoms, 0)
            self._append(first)
            labelled, calls = [first], 1
        model = self._refit(labelled)
        if len(labelled) > 1:  # resumed: the sparse set grows again from the data
            model = self._refit(labelled, self._grow_sparse(model, labelled[-1]))
        atoms.calc = model.calculator(uncertainty=True)
        dyn = dynamics(atoms, timestep, **dynamics_kwargs)
        history = []
        last_call = step
        while step < steps:
            dyn.run(1)
            step += 1
            per_atom = np.linalg.norm(atoms.calc.results["forces_std"], axis=1)
            history.append(float(per_atom.max()))
            if history[-1] > self._threshold(model) and step - last_call >= self.min_interval:
                new = self._label(atoms, step)
                self._append(new)  # on disk before the model changes
                labelled.append(new)
                calls += 1
                last_call = step
                model = self._refit(labelled, self._grow_sparse(model, new))
                atoms.calc = model.calculator(uncertainty=True)
                self._checkpoint(atoms, step)
            elif step % self.checkpoint_interval == 0:
                self._checkpoint(atoms, step)
        self._checkpoint(atoms, step)
        return OnTheFlyResult(step, calls, len(labelled), history, model)
