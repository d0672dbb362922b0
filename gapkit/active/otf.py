"""On-the-fly learning: MD on the GAP, reference calls where it is unsure."""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from sklearn.base import clone

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

from .._files import atomic_write, check_output_path
from .._validation import check_structures, read_training_labels
from ..estimator import GAPRegressor
from ..exceptions import InvalidParameterError, InvalidStructureError
from .incremental import IncrementalGAP, most_uncertain_environments
from .selection import label_structures

__all__ = ["OnTheFlyLearner", "OnTheFlyResult", "read_run_data", "drop_partial_frame"]


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
        Largest per-atom force std at every step of this run, in the units of
        ``threshold`` before scaling (eV/Å of calibrated std).
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
    ``max_j |std(F_j)|`` is compared with ``threshold`` (see there for its
    units). Above it, the reference calculator labels the current structure,
    which is appended to ``data_path`` (extended XYZ, flushed and synced to
    disk *before* the model changes); the
    ``n_sparse_add`` environments of that structure with the largest
    local-energy uncertainty (under the model before the update) join the
    sparse points; the model is updated incrementally
    (:class:`~gapkit.active.IncrementalGAP`: new columns of the design matrix
    for the cached structures, rows of the new structure, one QR; no
    descriptor of an earlier structure is computed again); and the dynamics
    continue with it. ``e0`` and the hyperparameters are those of the initial
    fit on ``initial_data`` (if any) and the first labelled structure; with
    ``optimize`` set on the model, the hyperparameters are optimised again on
    all labelled data after every update (from the cached rows). The sparse
    points of the initial fit are drawn with the model's ``random_state`` (0
    when None, so that a resumed run draws the same ones).

    The learner holds every labelled structure's descriptor with derivatives
    in memory (the :class:`~gapkit.active.IncrementalGAP` cache, about 2.5 MiB
    per 32-atom copper cell at ``r_cut=4, n_max=6, l_max=4``; more for larger
    cells, cutoffs and bases).

    A run that is killed resumes from its files: the labelled structures are
    read back from ``data_path`` (no reference calculation is repeated and
    none is added twice) and the model is rebuilt by replaying them in order
    (initial fit on the first, then for each following one the same sparse
    point growth and update as in the run), which gives the model the
    uninterrupted run had, to rounding (a resume must be given the same
    ``initial_data``: the first frame of the data file records a fingerprint
    of it, and a resume with other data is refused). The dynamics restart
    from the newest of the checkpoint and the last labelled structure. The
    run always continues from the state as written to those files (positions
    and momenta to the 8 decimals of extended XYZ), so with deterministic
    dynamics (``VelocityVerlet``) a resumed run repeats the uninterrupted one.

    The files are checked before any work and nothing of value in them is
    ever lost. The only change a resume makes to the data file is to remove a
    last frame cut short (the run was killed while appending it; a
    :class:`RuntimeWarning` says so and that reference calculation is done
    again). A data file damaged anywhere else, or one that is not the
    extended-XYZ output of a run (a model file, another data set), is refused
    and left byte for byte as it was (see :func:`read_run_data`); so is a
    checkpoint file that is not a checkpoint. The checkpoint is replaced
    atomically (:func:`gapkit._files.atomic_write`).

    Parameters
    ----------
    model : GAPRegressor
        Settings of the model (fitted or not). It is cloned, not changed.
    reference : ase.calculators.calculator.Calculator
        The reference method (DFT, xTB, EMT, ...).
    threshold : float, default=0.1
        Uncertainty that triggers a reference call: the largest over the
        atoms of the calculator's ``forces_std`` norm (the norm of an atom's
        three component stds), in eV/Å of *calibrated* force std. The model's
        stds are calibrated (its ``std_scale_``, applied inside every
        prediction, and renewed by :class:`~gapkit.active.IncrementalGAP` as
        data arrive), so the threshold is in the units of the force error
        the model expects. With ``relative=True`` it is a multiple of the
        model's force noise ``hyperparameters_["sigma_force"]`` (e.g. 2.0:
        twice the force noise, per component, of the labels).
    relative : bool, default=False
        Whether ``threshold`` is a multiple of ``sigma_force`` (see there).
    data_path : str or path-like, default="otf_data.xyz"
        Every reference result is appended here (extended XYZ). An existing
        file is the data of an earlier run, which is resumed.
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
    initial_data : list of ase.Atoms or str or path-like, default=None
        Labelled structures (with the labels ``fit`` takes: energy, forces,
        stress; or an extended-XYZ file of them, e.g. the data file of an
        earlier run) that the model starts from: the initial fit is on
        ``initial_data`` plus the first labelled structure of the run. They
        may be of another system (other sizes, a perfect cell before a
        vacancy) and are not written to ``data_path``. They are used as
        extended XYZ writes them (positions and forces to 8 decimals), so
        data held in memory and the same data read back from a file give the
        same model. A resume must be given the same ``initial_data``.
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
        initial_data=None,
    ):
        if not isinstance(model, GAPRegressor):
            raise InvalidParameterError(
                f"OnTheFlyLearner: 'model' must be a GAPRegressor; got {type(model).__name__}."
            )
        if not (_real(threshold) and np.isfinite(threshold) and threshold > 0):
            raise InvalidParameterError(
                f"OnTheFlyLearner: 'threshold' must be a positive finite number; got {threshold!r}."
            )
        for name, value in (
            ("checkpoint_interval", checkpoint_interval),
            ("min_interval", min_interval),
        ):
            if not (
                isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
            ):
                raise InvalidParameterError(
                    f"OnTheFlyLearner: {name!r} must be an integer >= 1; got {value!r}."
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
            Path(checkpoint_path)
            if checkpoint_path is not None
            else self.data_path.with_suffix(".restart.xyz")
        )
        self.checkpoint_interval = checkpoint_interval
        self.n_sparse_add = n_sparse_add
        self.min_interval = min_interval
        self.initial_data = initial_data
        # as written to extended XYZ, and the fingerprint recorded in the data file
        self._initial, self._initial_id = _check_initial_data(initial_data, model)

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
        """Save the MD state atomically (mode from the umask); returns it as a resume
        reads it."""
        state = Atoms(
            atoms.numbers,
            atoms.positions,
            cell=atoms.cell,
            pbc=atoms.pbc,
            momenta=atoms.get_momenta(),
        )
        state.info["otf_step"] = step
        text, written = self._as_written(state)
        atomic_write(self.checkpoint_path, lambda fh: fh.write(text.encode()), _OWNER)
        return written

    @staticmethod
    def _continue_from(atoms: Atoms, state: Atoms) -> None:
        """Put the state as written into the running ``atoms`` (a resume starts there)."""
        atoms.set_positions(state.positions)
        atoms.set_momenta(state.get_momenta())

    def _check_files(self) -> tuple[list[Atoms], int, Atoms | None]:
        """Check both files before any work: the labelled structures, the length of
        their complete frames in the data file and the checkpoint (None if absent).
        Nothing is changed on disk."""
        check_output_path(self.data_path, _OWNER)
        check_output_path(self.checkpoint_path, _OWNER)
        if self.data_path.resolve() == self.checkpoint_path.resolve():
            raise InvalidParameterError(
                f"{_OWNER}: 'data_path' and 'checkpoint_path' are the same file "
                f"{str(self.data_path)!r}; give the checkpoint another path."
            )
        labelled, complete = read_run_data(self.data_path, _OWNER, key="otf_step")
        checkpoint = None
        if self.checkpoint_path.exists() and self.checkpoint_path.stat().st_size > 0:
            checkpoint = _read_checkpoint(self.checkpoint_path)
        return labelled, complete, checkpoint

    # -------------------------------------------------------------- model
    def _threshold(self, model) -> float:
        if not self.relative:
            return float(self.threshold)
        return float(self.threshold * model.hyperparameters_["sigma_force"])

    def _start_model(self, first: Atoms) -> IncrementalGAP:
        """The initial fit on ``initial_data`` and the first labelled structure."""
        model = clone(self.model)
        if model.random_state is None:  # a resumed run must draw the same sparse points
            model.set_params(random_state=0)
        return IncrementalGAP(model, [*self._initial, first])

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
        if step == 0 and self._initial_id is not None:
            labelled.info[_INITIAL_KEY] = self._initial_id
        return labelled

    def _check_same_initial_data(self, first: Atoms) -> None:
        """Refuse to resume a run that started from other ``initial_data``."""
        recorded = first.info.get(_INITIAL_KEY)
        recorded = None if recorded is None else str(recorded)
        if recorded == self._initial_id:
            return

        def what(fingerprint):
            if fingerprint is None:
                return "no initial_data"
            count, _, digest = fingerprint.partition(":")
            return f"initial_data of {count} structures (sha256 {digest})"

        raise InvalidParameterError(
            f"OnTheFlyLearner.run: {str(self.data_path)!r} holds a run that started from "
            f"{what(recorded)}, but this learner has {what(self._initial_id)}; a resume "
            "replays the run from the same initial_data: give that, or another data_path."
        )

    # ---------------------------------------------------------------- run
    def run(
        self,
        atoms: Atoms,
        steps: int,
        *,
        timestep: float = 1.0 * units.fs,
        dynamics=VelocityVerlet,
        callback=None,
        **dynamics_kwargs,
    ) -> OnTheFlyResult:
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
        callback : callable, default=None
            ``callback(dyn, step)``, with ``dyn`` the dynamics object and
            ``step`` the number of steps done in total: called once before
            the first step (with 0, or on a resume with the step resumed
            from, so that settings that follow the step hold from the start)
            and then after every MD step, before its uncertainty is checked.
            It may change the dynamics, e.g. a temperature ramp
            ``lambda dyn, step: dyn.set_temperature(temperature_K=300 + step)``
            with ``Langevin``, or the atoms (``dyn.atoms``, e.g. a strained
            cell); the uncertainty checked is that of the forces the step
            computed, and a reference call labels the atoms as the callback
            left them.
        **dynamics_kwargs
            Passed to ``dynamics`` (e.g. ``temperature_K``, ``friction``).

        Returns
        -------
        OnTheFlyResult

        Raises
        ------
        InvalidParameterError
            A path cannot be written, ``data_path`` or ``checkpoint_path``
            holds a file that is not the output of a run, or the data file
            holds a run of another system. Raised before any reference call;
            no file is changed.
        InvalidStructureError
            The data file of an earlier run is damaged (not just a last frame
            cut short); the message names the file, the frame and the line.
            No file is changed.
        """
        if not (
            isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps >= 0
        ):
            raise InvalidParameterError(
                f"OnTheFlyLearner.run: 'steps' must be an integer >= 0; got {steps!r}."
            )
        if callback is not None and not callable(callback):
            raise InvalidParameterError(
                "OnTheFlyLearner.run: 'callback' must be callable as callback(dyn, step) "
                f"or None; got {type(callback).__name__}."
            )
        with _exclusive(self.data_path):
            return self._run(atoms, steps, timestep, dynamics, callback, dynamics_kwargs)

    def _run(self, atoms, steps, timestep, dynamics, callback, dynamics_kwargs) -> OnTheFlyResult:
        labelled, complete, checkpoint = self._check_files()
        seen = [int(a.info.get("otf_step", 0)) for a in labelled]
        for k in range(1, len(seen)):
            if seen[k] <= seen[k - 1]:
                raise InvalidStructureError(
                    f"OnTheFlyLearner.run: {str(self.data_path)!r}, frame {k + 1} (counted "
                    f"from 1) has otf_step {seen[k]}, not after {seen[k - 1]}: a duplicated "
                    "or reordered frame (two runs on one file?). Nothing was changed."
                )
        step, calls = 0, 0
        atoms = atoms.copy()
        if labelled:  # resume: no reference call, the model is rebuilt from the data
            candidates = [labelled[-1]] + ([checkpoint] if checkpoint is not None else [])
            latest = max(candidates, key=lambda a: a.info.get("otf_step", 0))
            step = int(latest.info.get("otf_step", 0))
            if not np.array_equal(latest.numbers, atoms.numbers):
                raise InvalidParameterError(
                    f"OnTheFlyLearner.run: {self.data_path} holds a run of a different system "
                    f"({latest.get_chemical_formula()}, not {atoms.get_chemical_formula()}); "
                    "give the structure it started from, or another data_path."
                )
            self._check_same_initial_data(labelled[0])
        drop_partial_frame(self.data_path, complete, _OWNER)
        if labelled:
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
        if callback is not None:
            callback(dyn, step)
        while step < steps:
            dyn.run(1)
            step += 1
            if callback is not None:
                callback(dyn, step)
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


_OWNER = "OnTheFlyLearner"
_NEWLINE = b"\n"
#: Info key of a run's first frame: ``"<count>:<sha256>"`` of its initial data.
_INITIAL_KEY = "otf_initial_data"


def _check_initial_data(initial_data, model: GAPRegressor) -> tuple[list[Atoms], str | None]:
    """The structures of ``initial_data`` as extended XYZ writes them (read back
    from that text) and their fingerprint ``"<count>:<sha256 of the text>"``;
    ``([], None)`` for None or none. Checked as ``fit`` checks training structures."""
    if initial_data is None:
        return [], None
    where = "OnTheFlyLearner: 'initial_data'"
    if isinstance(initial_data, (str, os.PathLike)):
        path = Path(initial_data)
        try:
            frames = read(path, index=":", format="extxyz")
        except Exception as err:  # noqa: BLE001 - any parser error: name the file
            raise InvalidParameterError(
                f"{where}: cannot read {str(path)!r} as extended XYZ ({err}); give a list "
                "of labelled ase.Atoms or an extended-XYZ file of them."
            ) from err
    elif isinstance(initial_data, Atoms) or not isinstance(initial_data, (list, tuple)):
        raise InvalidParameterError(
            f"{where} must be a list of labelled ase.Atoms, an extended-XYZ file of them "
            f"or None; got {type(initial_data).__name__}."
        )
    else:
        frames = list(initial_data)
    if not frames:
        return [], None
    frames = check_structures(frames, where)  # names the structure index
    keys = (model.energy_key, model.forces_key, model.stress_key)
    read_training_labels(frames, None, keys, where)  # labels present and well formed
    texts, written = [], []
    for atoms in frames:
        text, back = OnTheFlyLearner._as_written(atoms)
        texts.append(text)
        written.append(back)
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()[:16]
    return written, f"{len(written)}:{digest}"


#: ``Properties=name:type:count:...`` of an extended-XYZ comment line.
_PROPERTIES = re.compile(r"(?:^|\s)Properties=(\S+)", re.IGNORECASE)


def _column_types(comment: str) -> list[str] | None:
    """The type (S, R, I or L) of every column of the atom lines that the comment
    line declares (extended XYZ without ``Properties`` has species and positions);
    None when the declaration cannot be parsed (ASE then decides)."""
    match = _PROPERTIES.search(comment)
    if match is None:
        return ["S", "R", "R", "R"]
    parts = match.group(1).strip("\"'").split(":")
    if len(parts) % 3:
        return None
    types = []
    for kind, count in zip(parts[1::3], parts[2::3], strict=True):
        if kind.upper() not in ("S", "R", "I", "L") or not count.isdigit():
            return None
        types += [kind.upper()] * int(count)
    return types


def _bad_atom_line(line: str, types: list[str]) -> str | None:
    """What is wrong with an atom line (None if nothing is)."""
    fields = line.split()
    if len(fields) != len(types):
        return f"expected {len(types)} columns, found {len(fields)}"
    for value, kind in zip(fields, types, strict=True):
        try:
            if kind == "R":
                float(value)
            elif kind == "I":
                int(value)
        except ValueError:
            return f"{value!r} is not {'a number' if kind == 'R' else 'an integer'}"
    return None


class _Damaged(Exception):
    """A problem at a line of a data file (raised by :func:`_scan_frames`)."""

    def __init__(self, frame: int, line: int, what: str):
        super().__init__(what)
        self.frame, self.line, self.what = frame, line, what


def _scan_frames(raw: bytes, key: str) -> tuple[list[tuple[int, int, int]], int]:
    """Split an extended-XYZ file into frames without changing it.

    Returns the complete frames as ``(first byte, end byte, first line)`` (lines
    counted from 1) and the length in bytes of the part that holds them. Only a
    last frame cut short may follow that part: a frame with fewer lines than its
    atom count asks for, or whose last line has no newline, at the end of the
    file, every line of it that is complete well formed (and its comment line,
    when complete, carrying ``key``). Anything else raises :class:`_Damaged`.
    """
    lines = raw.splitlines(keepends=True)
    frames: list[tuple[int, int, int]] = []
    offset = i = 0
    while i < len(lines):
        if not lines[i].strip():  # blank lines between frames
            offset += len(lines[i])
            i += 1
            continue
        k = len(frames) + 1
        head = lines[i].decode("utf-8", errors="replace").strip()
        try:
            n_atoms = int(head)
        except ValueError:
            raise _Damaged(k, i + 1, f"expected the number of atoms, got {head!r:.40}") from None
        if n_atoms < 0:
            raise _Damaged(k, i + 1, f"the number of atoms is negative ({n_atoms})")
        frame = lines[i : i + n_atoms + 2]
        cut = len(frame) < n_atoms + 2 or not frame[-1].endswith(b"\n")
        types = None
        if len(frame) > 1 and frame[1].endswith(b"\n"):
            comment = frame[1].decode("utf-8", errors="replace")
            types = _column_types(comment)
            if cut and f"{key}=" not in comment:
                raise _Damaged(k, i + 2, f"the comment line of the last frame has no {key!r}")
        for j, line in enumerate(frame[2:], start=i + 3):
            if types is None or not line.endswith(b"\n"):
                continue  # undeclared columns (ASE decides) or the cut end of the file
            problem = _bad_atom_line(line.decode("utf-8", errors="replace"), types)
            if problem:
                raise _Damaged(k, j, f"atom line: {problem}")
        if cut:
            return frames, offset
        size = sum(len(line) for line in frame)
        frames.append((offset, offset + size, i + 1))
        offset += size
        i += n_atoms + 2
    return frames, offset


def _real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


@contextmanager
def _exclusive(data_path: Path):
    """Hold an exclusive lock beside the data file while a run uses it, so that two
    runs on the same file (which would write every structure twice) cannot overlap."""
    lock_path = data_path.with_name(data_path.name + ".lock")
    if fcntl is None:
        yield
        return
    try:
        fh = open(lock_path, "a")  # noqa: SIM115 - held for the whole run
    except OSError:
        fh = None  # a directory we cannot write: the data-file checks report it
    if fh is None:
        yield
        return
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise InvalidParameterError(
                f"OnTheFlyLearner.run: another run is using {str(data_path)!r} (lock "
                f"{str(lock_path)!r}); wait for it to end or use another data_path."
            ) from err
        yield
    finally:
        fh.close()


def read_run_data(path, owner: str, *, key: str) -> tuple[list[Atoms], int]:
    """Read back the labelled structures a learning run appended to ``path``.

    Changes nothing on disk. The file must be extended XYZ as the run wrote
    it: every frame readable by ASE, labelled with energy and forces, with
    ``key`` in its info. Only the last frame may be cut short (the run was
    killed while appending it); it is not returned, and
    :func:`drop_partial_frame` removes it.

    Parameters
    ----------
    path : str or path-like
        The data file; a missing or empty one holds no structures.
    owner : str
        Prefix of the error messages.
    key : str
        Info key every frame of a run carries (``"otf_step"``, ``"pool_index"``).

    Returns
    -------
    frames : list of ase.Atoms
        The complete frames, in order.
    complete : int
        Length in bytes of the part of the file that holds them (the file's
        size when no frame is cut short).

    Raises
    ------
    InvalidParameterError
        The file does not look like a data file of a previous run (its first
        frame is not extended XYZ of a labelled structure with ``key``, or it
        is not text): ``path`` names the wrong file.
    InvalidStructureError
        A frame after the first is damaged (unparsable line, frame ASE cannot
        read, no labels, no ``key``), or the last frame is cut short in a way
        a killed write cannot produce. The message gives the frame (counted
        from 1) and the line (counted from 1).
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return [], 0
    raw = path.read_bytes()

    def refuse(frame: int, line: int, what: str) -> Exception:
        if frame == 1:
            return InvalidParameterError(
                f"{owner}: {str(path)!r} does not look like an extended-XYZ data file of a "
                f"previous run (line {line}: {what}); it is left untouched: give another path "
                "(or move the file away) to start afresh."
            )
        return InvalidStructureError(
            f"{owner}: {str(path)!r} is damaged in frame {frame} (frames counted from 1), "
            f"line {line}: {what}. Frames 1 to {frame - 1} are intact and nothing was "
            "changed: repair or remove the damaged part to resume (or move the file away "
            "to start afresh)."
        )

    try:
        spans, complete = _scan_frames(raw, key)
    except _Damaged as err:
        raise refuse(err.frame, err.line, err.what) from None
    frames = []
    for k, (start, end, line) in enumerate(spans, start=1):
        where = f"lines {line}-{line + raw[start:end].count(_NEWLINE) - 1}"
        try:
            atoms = read(io.StringIO(raw[start:end].decode("utf-8")), format="extxyz")
        except Exception as err:  # noqa: BLE001 - any parser error: the frame is unreadable
            raise refuse(k, line, f"ASE cannot read the frame ({where}): {err}") from err
        results = atoms.calc.results if atoms.calc is not None else {}
        missing = [name for name in ("energy", "forces") if name not in results]
        if missing:
            raise refuse(k, line, f"the frame ({where}) has no {' or '.join(missing)}")
        if key not in atoms.info:
            raise refuse(k, line + 1, f"the frame ({where}) has no {key!r} in its comment line")
        frames.append(atoms)
    return frames, complete


def drop_partial_frame(path, complete: int, owner: str) -> None:
    """Cut a last frame left half-written (a run killed while appending it) from ``path``.

    ``complete`` is the length :func:`read_run_data` returned; nothing happens
    when the file is no longer than that. Otherwise the file is truncated to
    it, with a :class:`RuntimeWarning` (the structure of that frame is labelled
    again).
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size <= complete:
        return
    warnings.warn(
        f"{owner}: the last frame of {path} is incomplete (the run was killed while "
        "writing it); it is removed and its reference calculation will be repeated.",
        RuntimeWarning,
        stacklevel=3,
    )
    os.truncate(path, complete)


def _read_checkpoint(path: Path) -> Atoms:
    """The MD state of a checkpoint file, refused unless it is one."""
    raw = path.read_bytes()
    problem = None
    try:
        spans, complete = _scan_frames(raw, "otf_step")
    except _Damaged as err:
        spans, problem = [], f"line {err.line}: {err.what}"
    if problem is None and (len(spans) != 1 or complete != len(raw)):
        problem = f"{len(spans)} complete frames, not one"
    if problem is None:
        try:
            state = read(io.StringIO(raw.decode("utf-8")), format="extxyz")
        except Exception as err:  # noqa: BLE001 - any parser error: not a checkpoint
            problem = f"ASE cannot read it: {err}"
        else:
            if "otf_step" not in state.info or "momenta" not in state.arrays:
                problem = "no 'otf_step' or no momenta"
    if problem is not None:
        raise InvalidParameterError(
            f"{_OWNER}: checkpoint {str(path)!r} does not look like the checkpoint of a "
            f"previous run ({problem}); it is left as it is: move it away or give another "
            "checkpoint_path."
        )
    return state
