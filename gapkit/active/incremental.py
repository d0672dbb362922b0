"""Incremental updates of a fitted GAP: new structures, new sparse points, no refit.

A full :meth:`GAPRegressor.fit <gapkit.GAPRegressor.fit>` recomputes the SOAP
descriptors and their derivatives of every labelled structure, the design
matrix ``K_NM`` and its QR. When one structure and a few sparse points are
added, almost all of that work is repeated for nothing. :class:`IncrementalGAP`
keeps, for every labelled structure, its descriptor (with derivatives) and its
unwhitened design-matrix rows at the current sparse points, so that

- :meth:`IncrementalGAP.add_structures` computes the descriptors and rows of
  the new structures only and folds them into the stored R factor (as
  :meth:`GAPRegressor.partial_fit <gapkit.GAPRegressor.partial_fit>` does);
- :meth:`IncrementalGAP.add_sparse_points` computes only the *new columns* of
  every cached structure (one small GEMM per structure, no descriptor work),
  joins them with the cached ones, refactors ``K_MM + jitter`` and redoes the
  QR of the whitened rows.

The result equals a fit from scratch with the same sparse points, ``e0`` and
hyperparameters to rounding: predictions to about 1e-11 relative. (The new
columns, computed apart from the old ones, differ from a refit's by an ulp;
where ``K_MM`` is nearly singular, kept positive definite only by the jitter,
the weights can then differ by up to ~1e-7 relative along directions that
barely change any prediction.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from joblib import delayed

from .._validation import Labels, check_structures
from ..backend import Backend, to_numpy
from ..descriptors import StructureDescriptor
from ..estimator import (
    _KIND_ENERGY,
    _KIND_FORCE,
    _KIND_VIRIAL,
    ROWS_PER_BLOCK,
    GAPRegressor,
    _structure_rows,
)
from ..exceptions import InvalidParameterError
from ..gp import StreamingQR, log_marginal_likelihood

__all__ = ["IncrementalGAP", "most_uncertain_environments"]

#: New sparse points closer than this (largest component difference) to a sparse
#: point of the same species are duplicates and skipped.
DUPLICATE_TOLERANCE = 1e-10

_SIGMA_OF_KIND = {_KIND_ENERGY: "sigma_energy", _KIND_FORCE: "sigma_force",
                  _KIND_VIRIAL: "sigma_virial"}


def most_uncertain_environments(model: GAPRegressor, atoms: Atoms,
                                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` environments of ``atoms`` with the largest local-energy std.

    Candidates for new sparse points (e.g. for
    :meth:`IncrementalGAP.add_sparse_points`): where the model is least sure
    of the local energy, a new basis function helps most.

    Returns
    -------
    features : ndarray of shape (k, n_features)
        Normalised descriptors of those environments, most uncertain first.
    numbers : ndarray of shape (k,)
        Their atomic numbers.
    """
    if k <= 0:
        return np.zeros((0, model.sparse_features_.shape[1])), np.zeros(0, int)
    _, local_std = model.predict_local_energies([atoms], return_std=True)
    worst = np.argsort(local_std[0], kind="stable")[::-1][:k]
    return model.descriptor_.features(atoms)[worst], atoms.numbers[worst]


class _Precomputed:
    """Stands in for the SOAP object in :func:`gapkit.estimator._structure_rows`:
    hands back a descriptor computed earlier instead of computing it again."""

    def __init__(self, desc: StructureDescriptor):
        self.desc = desc

    def features_and_derivatives(self, atoms: Atoms) -> StructureDescriptor:
        return self.desc

    def features(self, atoms: Atoms) -> np.ndarray:
        return self.desc.features


@dataclass
class _Entry:
    """What is kept of one labelled structure."""

    atoms: Atoms  # numbers, positions, cell (for e0 and the volume)
    labels: Labels  # baseline already subtracted
    sigmas: dict  # GAPRegressor._sigmas at the reference sigmas
    descriptor: StructureDescriptor
    rows: object  # (n_rows, M) unwhitened K_NM at the reference delta
    targets: np.ndarray  # (n_rows,) labels minus e0
    sigma: np.ndarray  # (n_rows,) noise at the reference sigmas
    kind: np.ndarray  # (n_rows,) row kinds (energy, force, virial, fixed)
    counts: dict  # energy, force and virial observations

    @property
    def nbytes(self) -> int:
        desc = self.descriptor
        arrays = [desc.features, desc.numbers, desc.centre, desc.neighbour, desc.dq_dr,
                  desc.dq_dstrain, self.rows, self.targets, self.sigma, self.kind]
        return int(sum(a.nbytes for a in arrays if a is not None))


def _new_entry(descriptor, atoms: Atoms, labels: Labels, sigmas: dict, e0: dict, q_sparse,
               z_sparse: np.ndarray, delta, zeta: int) -> _Entry:
    """Descriptor and design-matrix rows of one new structure (may run in a worker)."""
    if labels.forces is not None or labels.stress is not None:
        desc = descriptor.features_and_derivatives(atoms)
    else:
        desc = StructureDescriptor(descriptor.features(atoms), atoms.numbers.copy())
    rows, targets, sigma, kind, counts = _structure_rows(
        _Precomputed(desc), atoms, labels, sigmas, e0, q_sparse, z_sparse, delta, zeta)
    light = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return _Entry(light, labels, sigmas, desc, rows, targets, sigma, kind, counts)


class IncrementalGAP:
    """A fitted :class:`~gapkit.GAPRegressor` that grows without refitting.

    The wrapped model is updated in place: after every method it is a normal
    fitted ``GAPRegressor`` (``predict*`` with ``return_std``, ``calculator()``,
    ``save()``) equal, to rounding, to
    ``clone(model).set_params(e0=model.e0_, optimize=False, delta=d,
    sigma_energy=..., sigma_force=..., sigma_virial=...).fit(all_structures,
    sparse_points=(model.sparse_features_, model.sparse_numbers_))`` with ``d``
    and the sigmas from ``model.hyperparameters_``.

    What is kept per labelled structure: its SOAP descriptor with derivatives
    (:class:`~gapkit.descriptors.StructureDescriptor`, the bulk of the memory:
    about ``8 * n_features * (3 * n_pairs + 9 * n_atoms)`` bytes, ~2.5 MiB for a
    32-atom copper cell with ``r_cut=4, n_max=6, l_max=4``), its unwhitened
    rows of ``K_NM`` (``8 * (1 + 3 * n_atoms + 6) * M`` bytes), the targets and
    the noise of every row. :attr:`cache_nbytes` says how much that is.

    What stays as first fitted: ``e0_``, the descriptor, ``zeta``, ``jitter``,
    and the hyperparameters (``hyperparameters_``: ``delta`` and the three
    sigmas). A model fitted with ``optimize`` keeps the values that fit found;
    :meth:`optimize_hyperparameters` re-optimises them on all cached rows
    (no descriptor work). Refit with :meth:`GAPRegressor.fit
    <gapkit.GAPRegressor.fit>` to renew ``e0_`` or the sparse-point selection.
    A ``baseline`` is supported (subtracted from the labels of each new
    structure, as in ``fit``). A fitted ``std_scale_`` (from ``calibrate``) is
    left as it is. Descriptor work always runs in this process or on joblib
    workers (``n_jobs``), never on Dask (``scheduler`` is only used by the
    initial ``fit``).

    Do not call ``fit`` or ``partial_fit`` on the wrapped model while it is
    wrapped: the cache would no longer describe it.

    Parameters
    ----------
    model : GAPRegressor
        Fitted on ``frames``, or not fitted (it is then fitted here with
        ``model.fit(frames, y, sparse_points)``, and the descriptors of
        ``frames`` are computed twice: once by ``fit``, once for the cache).
        Changed in place.
    frames : list of ase.Atoms
        The labelled structures the model is (to be) fitted on. For a model
        fitted already, the weights are solved again from these structures
        with the model's sparse points, ``e0_`` and hyperparameters.
    y : array-like of shape (n_structures,), default=None
        Total energies overriding those on ``frames``.
    sparse_points : tuple of (ndarray, ndarray), default=None
        For an unfitted model, passed to ``fit`` (see there).

    Attributes
    ----------
    model : GAPRegressor
        The wrapped model.

    Examples
    --------
    >>> from gapkit import GAPRegressor, SOAP
    >>> from gapkit.active import IncrementalGAP
    >>> from gapkit.datasets import load_cu_emt
    >>> train, test = load_cu_emt()
    >>> model = GAPRegressor(SOAP(r_cut=3.5, n_max=4, l_max=3), n_sparse=20, random_state=0)
    >>> inc = IncrementalGAP(model, train[:3])
    >>> inc = inc.add_structures(train[3:5])
    >>> inc.add_sparse_points(model.descriptor_.features(train[5])[:4], train[5].numbers[:4])
    4
    >>> inc.model.predict(test[:2]).shape
    (2,)
    """

    def __init__(self, model: GAPRegressor, frames: Sequence[Atoms], y=None, *,
                 sparse_points=None):
        if not isinstance(model, GAPRegressor):
            raise InvalidParameterError(
                f"IncrementalGAP: 'model' must be a GAPRegressor; got {type(model).__name__}.")
        frames = check_structures(frames, "IncrementalGAP")
        if not hasattr(model, "coefficients_"):
            model.fit(frames, y, sparse_points)
        elif sparse_points is not None:
            raise InvalidParameterError(
                "IncrementalGAP: 'sparse_points' is only used to fit an unfitted model; "
                "use add_sparse_points on a fitted one.")
        self.model = model
        # rows and noise are computed at these reference values (the constructor's,
        # as fit does) and scaled to the fitted hyperparameters when solving
        self._ref_delta = model._per_species(model.delta, model.species_, "delta")
        self._ref_sigma = {k: float(getattr(model, k))
                           for k in ("sigma_energy", "sigma_force", "sigma_virial")}
        self._entries: list[_Entry] = self._compute_entries(frames, y, "IncrementalGAP")
        self._solve_all()

    # ---------------------------------------------------------------- info
    @property
    def n_structures(self) -> int:
        """Labelled structures in the cache."""
        return len(self._entries)

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the cache (descriptors, derivatives, rows, targets)."""
        return sum(e.nbytes for e in self._entries)

    # ------------------------------------------------------------- helpers
    def _backend(self) -> Backend:
        return self.model._backend()

    def _ref_delta_columns(self, numbers: np.ndarray) -> np.ndarray:
        return np.array([self._ref_delta[chemical_symbols[int(z)]] for z in numbers], float)

    def _column_scale(self) -> np.ndarray | None:
        """``(delta_ / delta_ref)^2`` per column, None when all are 1."""
        ratio = self.model.delta_ / self._ref_delta_columns(self.model.sparse_numbers_)
        return None if np.all(ratio == 1.0) else ratio**2

    def _noise(self, entry: _Entry) -> np.ndarray:
        """Noise of an entry's rows at the fitted sigmas."""
        hyper = self.model.hyperparameters_
        sigma = entry.sigma
        for kind, name in _SIGMA_OF_KIND.items():
            factor = hyper[name] / self._ref_sigma[name]
            if factor != 1.0:
                sigma = np.where(entry.kind == kind, sigma * factor, sigma)
        return sigma

    def _weighted_blocks(self, entries: list[_Entry]):
        """Rows ``K_NM / sigma`` and targets ``y / sigma`` at the fitted hyperparameters,
        joined into blocks of at least ``ROWS_PER_BLOCK`` rows (as ``fit`` folds them)."""
        backend = self._backend()
        xp = backend.xp
        scale = self._column_scale()
        scale = None if scale is None else backend.asarray(scale)
        block, n_rows = [], 0
        for entry in entries:
            sigma = self._noise(entry)
            rows = entry.rows if scale is None else entry.rows * scale[None, :]
            block.append((rows / backend.asarray(sigma)[:, None],
                          backend.asarray(entry.targets / sigma)))
            n_rows += len(sigma)
            if n_rows >= ROWS_PER_BLOCK:
                yield xp.concat([b[0] for b in block], axis=0), xp.concat([b[1] for b in block])
                block, n_rows = [], 0
        if block:
            yield xp.concat([b[0] for b in block], axis=0), xp.concat([b[1] for b in block])

    def _compute_entries(self, frames: list[Atoms], y, owner: str) -> list[_Entry]:
        model = self.model
        labels = model._labels_to_learn(frames, y)
        backend = self._backend()
        q_sparse = backend.asarray(model.sparse_features_)
        delta = backend.asarray(self._ref_delta_columns(model.sparse_numbers_))
        jobs = (
            delayed(_new_entry)(model.descriptor_, a, lab, model._sigmas(a, self._ref_sigma),
                                model.e0_, q_sparse, model.sparse_numbers_, delta, model.zeta)
            for a, lab in zip(frames, labels, strict=True)
        )
        results = model._parallel(len(frames), backend)(jobs)
        return list(model._progress(results, len(frames), owner))

    def _solve_all(self) -> None:
        """QR of every cached row under the current sparse points (as ``fit``)."""
        model = self.model
        backend = self._backend()
        model.sparse_cholesky_ = model._sparse_cholesky(backend)
        solver = StreamingQR(len(model.sparse_numbers_),
                             prior=backend.asarray(model.sparse_cholesky_))
        for rows, targets in self._weighted_blocks(self._entries):
            solver.add_rows(rows, targets)
        self._store(solver)

    def _store(self, solver: StreamingQR) -> None:
        model = self.model
        self._solver = solver
        sigmas = [self._noise(e) for e in self._entries]
        model.log_marginal_likelihood_ = log_marginal_likelihood(
            solver, model.sparse_cholesky_, np.concatenate(sigmas))
        model._store_solution(solver)
        model.n_observations_ = {
            key: int(sum(e.counts[key] for e in self._entries))
            for key in ("energy", "forces", "virial")
        }

    # ------------------------------------------------------------- updates
    def add_structures(self, frames: Sequence[Atoms], y=None) -> IncrementalGAP:
        """Add labelled structures: their rows are folded into the R factor.

        Only the new structures' descriptors and rows are computed; the cost
        is theirs plus one triangular solve of size M.

        Parameters
        ----------
        frames : list of ase.Atoms
            Labelled structures (energy, forces and/or stress) of species the
            model knows.
        y : array-like of shape (n_structures,), default=None
            Total energies overriding those on ``frames``.

        Returns
        -------
        self : IncrementalGAP
        """
        frames = check_structures(frames, "IncrementalGAP.add_structures")
        new = self._compute_entries(frames, y, "add structures")
        for rows, targets in self._weighted_blocks(new):
            self._solver.add_rows(rows, targets)
        self._entries.extend(new)
        self._store(self._solver)
        return self

    def add_sparse_points(self, features, numbers) -> int:
        """Add sparse points and solve again.

        The new columns of ``K_NM`` are computed for every cached structure
        from its cached descriptor (no SOAP or derivative work, and the
        existing columns are not recomputed), joined with the cached ones and
        ordered by species (stable, the order ``fit`` uses). ``K_MM + jitter``
        is factored again and the whitened rows are solved by QR.

        Parameters
        ----------
        features : ndarray of shape (k, n_features)
            Normalised descriptors of the new sparse points (e.g. rows of
            ``model.descriptor_.features(atoms)``).
        numbers : ndarray of shape (k,)
            Their atomic numbers.

        Returns
        -------
        int
            Points added: those equal (every component to 1e-10) to an
            existing sparse point of the same species or to an earlier one of
            ``features`` are skipped. With none left
            the model is not changed.
        """
        model = self.model
        q_new, z_new = self._check_points(features, numbers)
        keep = self._distinct(q_new, z_new)
        if len(keep) == 0:
            return 0
        q_new, z_new = q_new[keep], z_new[keep]
        backend = self._backend()
        xp = backend.xp
        q_dev = backend.asarray(q_new)
        delta_dev = backend.asarray(self._ref_delta_columns(z_new))
        z_all = np.concatenate([model.sparse_numbers_, z_new])
        order = np.argsort(z_all, kind="stable")
        order_dev = backend.asarray(order)
        rows = []
        for entry in self._entries:
            new_cols, *_ = _structure_rows(_Precomputed(entry.descriptor), entry.atoms,
                                           entry.labels, entry.sigmas, model.e0_, q_dev,
                                           z_new, delta_dev, model.zeta)
            rows.append(xp.take(xp.concat([entry.rows, new_cols], axis=1), order_dev, axis=1))
        delta = model.hyperparameters_["delta"]
        names = ("sparse_features_", "sparse_numbers_", "delta_", "sparse_cholesky_")
        before = ([e.rows for e in self._entries], {n: getattr(model, n) for n in names},
                  self._solver)
        try:
            for entry, r in zip(self._entries, rows, strict=True):
                entry.rows = r
            model.sparse_features_ = np.vstack([model.sparse_features_, q_new])[order]
            model.sparse_numbers_ = z_all[order]
            model.delta_ = np.array(
                [delta[chemical_symbols[int(z)]] for z in model.sparse_numbers_], float)
            self._solve_all()
        except BaseException:  # e.g. K_MM not positive definite: leave the model as it was
            for entry, r in zip(self._entries, before[0], strict=True):
                entry.rows = r
            for name, value in before[1].items():
                setattr(model, name, value)
            self._solver = before[2]
            raise
        return len(keep)

    def optimize_hyperparameters(self) -> None:
        """Fit ``delta`` and the sigmas again on every cached row, as ``fit`` does.

        Starts from the constructor's values, like :meth:`GAPRegressor.fit
        <gapkit.GAPRegressor.fit>` with ``optimize``, and maximises the log
        marginal likelihood of all labelled structures; the rows are the
        cached ones (no descriptor work), but every trial is one QR of all of
        them. Needs ``model.optimize`` (True or a list of names).
        """
        model = self.model
        if not model.optimize:
            raise InvalidParameterError(
                "IncrementalGAP.optimize_hyperparameters: the model's 'optimize' is False; "
                "set it to True or to a list of hyperparameter names.")
        backend = self._backend()
        # back to the reference values the cached rows were computed at
        model.hyperparameters_ = {"delta": dict(self._ref_delta), **self._ref_sigma}
        model.delta_ = self._ref_delta_columns(model.sparse_numbers_)
        model.sparse_cholesky_ = model._sparse_cholesky(backend)
        kept = [(e.rows, e.targets, e.sigma, e.kind) for e in self._entries]
        solver = model._optimize_hyperparameters(kept, backend)  # sets LML and the rest
        lml = model.log_marginal_likelihood_
        self._store(solver)
        model.log_marginal_likelihood_ = lml

    # --------------------------------------------------------------- checks
    def _check_points(self, features, numbers) -> tuple[np.ndarray, np.ndarray]:
        model = self.model
        q = np.asarray(to_numpy(features), dtype=float)
        z = np.asarray(to_numpy(numbers)).astype(int)
        if q.ndim == 1 and q.shape[0] == model.sparse_features_.shape[1]:
            q = q[None, :]
        z = z.reshape(-1)
        n_features = model.sparse_features_.shape[1]
        if q.ndim != 2 or q.shape[1] != n_features or z.shape != (len(q),):
            raise InvalidParameterError(
                f"IncrementalGAP.add_sparse_points: expected features of shape (k, {n_features})"
                f" and k atomic numbers; got {q.shape} and {z.shape}.")
        unknown = sorted(set(z.tolist()) - set(model.descriptor_.species_numbers.tolist()))
        if unknown:
            raise InvalidParameterError(
                f"IncrementalGAP.add_sparse_points: sparse points of species {unknown} the "
                f"model does not have ({', '.join(model.species_)}).")
        if not np.all(np.isfinite(q)):
            raise InvalidParameterError(
                "IncrementalGAP.add_sparse_points: features contain NaN or infinity.")
        return q, z

    def _distinct(self, q_new: np.ndarray, z_new: np.ndarray) -> np.ndarray:
        """Indices of the rows of ``q_new`` that are not, to ``DUPLICATE_TOLERANCE`` in
        every component, a sparse point of the same species or an earlier row."""
        q_old, z_old = self.model.sparse_features_, self.model.sparse_numbers_
        keep: list[int] = []
        for k, (row, z) in enumerate(zip(q_new, z_new, strict=True)):
            earlier = [j for j in keep if z_new[j] == z]
            same = np.vstack([q_old[z_old == z], q_new[earlier]])
            if len(same) and np.min(np.max(np.abs(same - row), axis=1)) <= DUPLICATE_TOLERANCE:
                continue
            keep.append(k)
        return np.array(keep, dtype=int)
