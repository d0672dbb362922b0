"""On-the-fly learning: MD on the GAP, reference calls where it is unsure."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from sklearn.base import clone

from ..exceptions import InvalidParameterError
from .incremental import IncrementalGAP, most_uncertain_environments
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
    local-energy uncertainty (under the model before the update) join the
    sparse points; the model is updated incrementally
    (:class:`~gapkit.active.IncrementalGAP`: new columns of the design matrix
    for the cached structures, rows of the new structure, one QR; no
    descriptor of an earlier structure is computed again); and the dynamics
    continue with it. ``e0`` and the hyperparameters are those of the initial
    fit on the first structure; with ``optimize`` set on the model, the
    hyperparameters are optimised again on all labelled data after every
    update (from the cached rows). The sparse points of the initial fit are
    drawn with the model's ``random_state`` (0 when None, so that a resumed
    run draws the same ones).

    The learner holds every labelled structure's descriptor with derivatives
    in memory (the :class:`~gapkit.active.IncrementalGAP` cache, about 2.5 MiB
    per 32-atom copper cell at ``r_cut=4, n_max=6, l_max=4``; more for larger
    cells, cutoffs and bases).

    A run that is killed resumes from its files: the labelled structures are
    read back from ``data_path`` (no reference calculation is repeated and
    none is added twice) and the model is rebuilt by replaying them in order
    (initial fit on the first, then for each following one the same sparse
    point growth and update as in the run), which gives the model the
    uninterrupted run had, to rounding. The dynamics restart from the newest
    of the checkpoint and the last labelled structure. The run always
    continues from the state as written to those files (positions and
    momenta to the 8 decimals of extended XYZ), so with deterministic
    dynamics (``VelocityVerlet``) a resumed run repeats the uninterrupted one.

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
        Environments added as sparse points per reference call. With 0 the
        sparse points stay those of the first structure, so the uncertainty
        of anything unlike it stays high and nearly every step may call the
        reference.
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
        if not (isinstance(n_sparse_add, (int, np.integer)) and n_sparse_add >= 0):
            raise InvalidParameterError(
                f"OnTheFlyLearner: 'n_sparse_add' must be an integer >= 0; got {n_sparse_add!r}."
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
    @staticmethod
    def _as_written(atoms: Atoms) -> tuple[str, Atoms]:
        """The extended-XYZ text of ``atoms`` and the structure read back from it."""
        buffer = io.StringIO()
        write(buffer, atoms, format="extxyz")
        text = buffer.getvalue()
        return text, read(io.StringIO(text), format="extxyz")

    def _append(self, atoms: Atoms) -> Atoms:
        """Append ``atoms`` to the data file (synced); returns it as a resume reads it."""
        text, written = self._as_written(atoms)
        with open(self.data_path, "a") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        return written

    def _checkpoint(self, atoms: Atoms, step: int) -> Atoms:
        """Save the MD state atomically; returns it as a resume reads it."""
        state = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                      momenta=atoms.get_momenta())
        state.info["otf_step"] = step
        text, written = self._as_written(state)
        fd, tmp = tempfile.mkstemp(dir=self.checkpoint_path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.checkpoint_path)
        return written

    @staticmethod
    def _continue_from(atoms: Atoms, state: Atoms) -> None:
        """Put the state as written into the running ``atoms`` (a resume starts there)."""
        atoms.set_positions(state.positions)
        atoms.set_momenta(state.get_momenta())

    def _read_labelled(self) -> list[Atoms]:
        """Labelled structures of the data file. A last frame cut short (the run was
        killed while writing it) is removed from the file, with a warning: its
        reference calculation is done again."""
        if not self.data_path.exists() or self.data_path.stat().st_size == 0:
            return []
        raw = self.data_path.read_bytes()
        complete = _complete_frames_length(raw)
        if complete < len(raw):
            warnings.warn(
                f"OnTheFlyLearner: the last frame of {self.data_path} is incomplete (the run "
                "was killed while writing it); it is removed and its reference calculation "
                "will be repeated.", RuntimeWarning, stacklevel=3)
            os.truncate(self.data_path, complete)
        if complete == 0:
            return []
        return read(io.StringIO(raw[:complete].decode()), ":", format="extxyz")

    # -------------------------------------------------------------- model
    def _threshold(self, model) -> float:
        if not self.relative:
            return float(self.threshold)
        return float(self.threshold * model.hyperparameters_["sigma_force"])

    def _start_model(self, first: Atoms) -> IncrementalGAP:
        """The initial fit on the first labelled structure."""
        model = clone(self.model)
        if model.random_state is None:  # a resumed run must draw the same sparse points
            model.set_params(random_state=0)
        return IncrementalGAP(model, [first])

    def _update(self, learner: IncrementalGAP, new: Atoms) -> None:
        """Grow the sparse set from ``new`` (chosen with the current model), add it."""
        q_new, z_new = most_uncertain_environments(learner.model, new, self.n_sparse_add)
        if len(z_new):
            learner.add_sparse_points(q_new, z_new)
        learner.add_structures([new])
        if learner.model.optimize:
            learner.optimize_hyperparameters()

    def _replay(self, labelled: list[Atoms]) -> IncrementalGAP:
        """The model an uninterrupted run had after these labelled structures."""
        learner = self._start_model(labelled[0])
        for new in labelled[1:]:
            self._update(learner, new)
        return learner

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
        if labelled:  # resume: no reference call, the model is rebuilt from the data
            candidates = [labelled[-1]]
            if self.checkpoint_path.exists():
                candidates.append(read(self.checkpoint_path))
            latest = max(candidates, key=lambda a: a.info.get("otf_step", 0))
            step = int(latest.info.get("otf_step", 0))
            if not np.array_equal(latest.numbers, atoms.numbers):
                raise InvalidParameterError(
                    f"OnTheFlyLearner.run: {self.data_path} holds a run of a different system "
                    f"({latest.get_chemical_formula()}, not {atoms.get_chemical_formula()}); "
                    "give the structure it started from, or another data_path.")
            # continue on the caller's atoms (masses, constraints, tags kept)
            atoms.set_cell(latest.cell)
            atoms.set_positions(latest.positions)
            atoms.set_momenta(latest.get_momenta())
            learner = self._replay(labelled)
        else:
            first = self._append(self._label(atoms, 0))  # on disk before the fit
            self._continue_from(atoms, first)
            labelled, calls = [first], 1
            learner = self._start_model(first)
        model = learner.model
        atoms.calc = model.calculator(uncertainty=True)
        dyn = dynamics(atoms, timestep, **dynamics_kwargs)
        history = []
        last_call = int(labelled[-1].info.get("otf_step", 0))
        while step < steps:
            dyn.run(1)
            step += 1
            per_atom = np.linalg.norm(atoms.calc.results["forces_std"], axis=1)
            history.append(float(per_atom.max()))
            if history[-1] > self._threshold(model) and step - last_call >= self.min_interval:
                new = self._append(self._label(atoms, step))  # on disk before the model changes
                self._continue_from(atoms, new)
                labelled.append(new)
                calls += 1
                last_call = step
                self._update(learner, new)
                atoms.calc = model.calculator(uncertainty=True)
                self._continue_from(atoms, self._checkpoint(atoms, step))
            elif step % self.checkpoint_interval == 0:
                self._continue_from(atoms, self._checkpoint(atoms, step))
        self._checkpoint(atoms, step)
        return OnTheFlyResult(step, calls, len(labelled), history, model)


def _complete_frames_length(raw: bytes) -> int:
    """Length in bytes of the complete extended-XYZ frames at the start of ``raw``
    (a frame: a line with the atom count, a comment line, that many atom lines)."""
    lines = raw.splitlines(keepends=True)
    offset = end = 0
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:  # blank lines between frames
            offset += len(lines[i])
            i += 1
            end = offset
            continue
        try:
            n_atoms = int(head)
        except ValueError:
            break
        frame = lines[i : i + n_atoms + 2]
        if len(frame) < n_atoms + 2 or not frame[-1].endswith(b"\n"):
            break
        offset += sum(len(line) for line in frame)
        i += n_atoms + 2
        end = offset
    return end
