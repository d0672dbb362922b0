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
from joblib import Parallel, delayed

from .._validation import Labels, check_structures, read_training_labels
from ..backend import Backend, resolve_device, to_numpy
from ..calibration import FoldedRows, assign_folds, cross_validated_scales, n_folds_for
from ..descriptors import StructureDescriptor
from ..estimator import GAPRegressor
from ..exceptions import InvalidParameterError
from ..gp import StreamingQR
from ..hyperopt import optimize_hyperparameters
from ..model import FittedGAP, delta_per_point, subtract_baseline
from ..rows import StructureRows, fold_rows, rescale_noise, row_prior_variance, structure_rows
from ..sparsify import check_sparse_points, sparse_cholesky

__all__ = ["IncrementalGAP", "most_uncertain_environments"]

#: New sparse points closer than this (largest component difference) to a sparse
#: point of the same species are duplicates and skipped.
DUPLICATE_TOLERANCE = 1e-10


def most_uncertain_environments(
    model: GAPRegressor, atoms: Atoms, k: int
) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass
class _Entry:
    """What is kept of one labelled structure."""

    atoms: Atoms  # numbers, positions, cell (for e0 and the volume)
    labels: Labels  # baseline already subtracted
    sigmas: dict  # NoiseModel.sigmas at the reference noise
    descriptor: StructureDescriptor
    rows: StructureRows  # unwhitened K_NM at the reference delta, targets, noise, kinds
    prior: np.ndarray | None = None  # prior variance of the rows per species (DTC scales)

    @property
    def nbytes(self) -> int:
        desc, r = self.descriptor, self.rows
        arrays = [
            desc.features,
            desc.numbers,
            desc.centre,
            desc.neighbour,
            desc.dq_dr,
            desc.dq_dstrain,
            r.rows,
            r.targets,
            r.sigma,
            r.kind,
        ]
        return int(sum(a.nbytes for a in arrays if a is not None))


def _new_entry(
    descriptor,
    atoms: Atoms,
    labels: Labels,
    sigmas: dict,
    e0: dict,
    q_sparse,
    z_sparse: np.ndarray,
    delta,
    zeta: int,
) -> _Entry:
    """Descriptor and design-matrix rows of one new structure (may run in a worker)."""
    if labels.forces is not None or labels.stress is not None:
        desc = descriptor.features_and_derivatives(atoms)
    else:
        desc = StructureDescriptor(descriptor.features(atoms), atoms.numbers.copy())
    rows = structure_rows(
        None, atoms, labels, sigmas, e0, q_sparse, z_sparse, delta, zeta, desc=desc
    )
    light = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return _Entry(light, labels, sigmas, desc, rows)


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
    the noise model and the hyperparameters (``hyperparameters_``: ``delta``
    and the three sigmas). A model fitted with ``optimize`` keeps the values
    that fit found; :meth:`optimize_hyperparameters` re-optimises them on all
    cached rows (no descriptor work). Every update replaces the model's
    immutable ``fitted_`` (so calculators notice it). Refit with :meth:`GAPRegressor.fit
    <gapkit.GAPRegressor.fit>` to renew ``e0_`` or the sparse-point selection.
    A ``baseline`` is supported (subtracted from the labels of each new
    structure, as in ``fit``). After every update the std scales are
    cross-validated again over all cached structures, as ``fit`` does them
    (``cv`` folds; one extra QR of the cached rows and a downdate per fold, no
    descriptor work), so the uncertainty stays calibrated as data arrive;
    with ``cv=None``, or scales a ``calibrate`` call fitted on validation
    structures before the model was wrapped, the scales stay as they are.
    Descriptor work always runs in this process or on joblib workers
    (``n_jobs``), never on Dask (``scheduler`` is only used by the initial
    ``fit``).

    Do not call ``fit``, ``partial_fit`` or ``calibrate`` on the wrapped model
    while it is wrapped: the cache would no longer describe it, and the next
    update refuses (``InvalidParameterError``).

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

    def __init__(self, model: GAPRegressor, frames: Sequence[Atoms], y=None, *, sparse_points=None):
        if not isinstance(model, GAPRegressor):
            raise InvalidParameterError(
                f"IncrementalGAP: 'model' must be a GAPRegressor; got {type(model).__name__}."
            )
        frames = check_structures(frames, "IncrementalGAP")
        if not model.__sklearn_is_fitted__():
            model.fit(frames, y, sparse_points)
        elif sparse_points is not None:
            raise InvalidParameterError(
                "IncrementalGAP: 'sparse_points' is only used to fit an unfitted model; "
                "use add_sparse_points on a fitted one."
            )
        self.model = model
        fitted = model.fitted_
        # rows and noise are computed at these reference values (the fitted ones) and
        # scaled to the current hyperparameters when solving
        self._ref_delta = dict(fitted.hyperparameters["delta"])
        self._ref_noise = fitted.noise
        self._entries: list[_Entry] = self._compute_entries(frames, y, "IncrementalGAP")
        self._solve_all(fitted)

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
        return resolve_device(self.model.device, "IncrementalGAP")

    def _column_scale(self, fitted: FittedGAP) -> np.ndarray | None:
        """``(delta / delta_ref)^2`` per column, None when all are 1."""
        ratio = fitted.delta / delta_per_point(self._ref_delta, fitted.sparse_numbers)
        return None if np.all(ratio == 1.0) else ratio**2

    def _items(self, entries: list[_Entry], fitted: FittedGAP):
        """(rows, targets, noise at the fitted sigmas) of cached entries."""
        ref, now = self._ref_noise.defaults, fitted.noise.defaults
        for e in entries:
            yield e.rows.rows, e.rows.targets, rescale_noise(e.rows.sigma, e.rows.kind, ref, now)

    def _compute_entries(self, frames: list[Atoms], y, owner: str) -> list[_Entry]:
        model, fitted = self.model, self.model.fitted_
        fitted.check_species(frames, owner)
        keys = (model.energy_key, model.forces_key, model.stress_key)
        labels = subtract_baseline(
            read_training_labels(frames, y, keys, owner), frames, fitted.baseline
        )
        backend = self._backend()
        q_sparse = backend.asarray(fitted.sparse_features)
        delta = backend.asarray(delta_per_point(self._ref_delta, fitted.sparse_numbers))
        jobs = (
            delayed(_new_entry)(
                fitted.descriptor,
                a,
                lab,
                self._ref_noise.sigmas(a, k),
                fitted.e0,
                q_sparse,
                fitted.sparse_numbers,
                delta,
                fitted.zeta,
            )
            for k, (a, lab) in enumerate(zip(frames, labels, strict=True))
        )
        in_process = len(frames) <= 1 or not backend.is_numpy
        n_jobs = 1 if in_process else (model.n_jobs or 1)
        return list(Parallel(n_jobs=n_jobs, return_as="generator")(jobs))

    def _solve_all(self, fitted: FittedGAP) -> None:
        """QR of every cached row under ``fitted``'s sparse points and hyperparameters."""
        backend = self._backend()
        l_mm = sparse_cholesky(
            fitted.sparse_features,
            fitted.sparse_numbers,
            fitted.delta,
            fitted.zeta,
            fitted.jitter,
            backend,
        )
        solver = StreamingQR(fitted.n_sparse, prior=backend.asarray(l_mm))
        fold_rows(
            solver,
            self._items(self._entries, fitted),
            backend,
            column_scale=self._column_scale(fitted),
        )
        self._store(solver, fitted.replace(sparse_cholesky=l_mm))

    def _store(self, solver: StreamingQR, fitted: FittedGAP, lml: float | None = None) -> None:
        items = list(self._items(self._entries, fitted))
        n_data = int(sum(len(s) for _, _, s in items))
        sum_log = float(sum(np.sum(np.log(s)) for _, _, s in items))
        counts = {
            key: int(sum(e.rows.counts[key] for e in self._entries))
            for key in ("energy", "forces", "virial")
        }
        self._solver = solver
        fitted = fitted.with_solution(
            solver, counts, n_data, sum_log, log_marginal_likelihood=lml, backend=self._backend()
        )
        self.model.fitted_ = fitted = self._recalibrated(solver, fitted)
        self._version = fitted.version

    def _recalibrated(self, solver: StreamingQR, fitted: FittedGAP) -> FittedGAP:
        """``fitted`` with std scales cross-validated over every cached structure, as
        ``fit`` does (the model's ``cv`` folds, seeded by its ``random_state_``);
        as it is with ``cv=None``, a single structure, or scales from ``calibrate``
        on validation structures (kept: they measure where the model is used)."""
        n_folds = n_folds_for(self.model.cv, len(self._entries))
        if not n_folds or fitted.calibration.get("method") == "validation":
            return fitted
        backend = self._backend()
        folds = assign_folds(len(self._entries), n_folds, fitted.random_state or 0)
        cv = FoldedRows(solver, folds, np.ones(len(self._entries), dtype=bool))
        species = np.unique(fitted.sparse_numbers)
        dtc = fitted.variance == "dtc"
        for e in self._entries:
            if dtc and (e.prior is None or e.prior.shape[1] != len(species)):
                has = {k: bool(e.rows.counts[k]) for k in ("energy", "forces", "virial")}
                e.prior = row_prior_variance(e.descriptor, fitted.zeta, species, has)
        ref, now = self._ref_noise.defaults, fitted.noise.defaults
        column_scale = self._column_scale(fitted)
        cv.fold(
            [e.rows._replace(prior=e.prior) for e in self._entries],
            backend,
            {"energy": 0, "forces": 0, "virial": 0},
            column_scale=column_scale,
            sigma_of=lambda r: rescale_noise(r.sigma, r.kind, ref, now),
        )
        delta = fitted.hyperparameters["delta"]
        scales, info = cross_validated_scales(
            solver,
            cv.parts,
            cv.held,
            l_factor=fitted.sparse_cholesky,
            delta_species=[delta[chemical_symbols[int(z)]] for z in species],
            variance=fitted.variance,
            backend=backend,
            column_scale=column_scale,
        )
        return fitted.replace(std_scale=scales, calibration=info)

    def _check_current(self, owner: str) -> None:
        """Refuse to update a model that was changed outside this object (its
        ``fit``, ``partial_fit`` or ``calibrate``): the cache no longer describes it."""
        if self.model.fitted_.version != self._version:
            raise InvalidParameterError(
                f"{owner}: the wrapped model was changed outside IncrementalGAP (fit, "
                "partial_fit or calibrate), so the cached rows no longer describe it; wrap "
                "it again: IncrementalGAP(model, all_structures)."
            )

    # ------------------------------------------------------------- updates
    def add_structures(self, frames: Sequence[Atoms], y=None) -> IncrementalGAP:
        """Add labelled structures: their rows are folded into the R factor.

        Only the new structures' descriptors and rows are computed; the cost
        is theirs plus one triangular solve of size M.

        Parameters
        ----------
        frames : list of ase.Atoms
            Labelled structures (energy, forces and/or stress) of species the
            model was trained on.
        y : array-like of shape (n_structures,), default=None
            Total energies overriding those on ``frames``.

        Returns
        -------
        self : IncrementalGAP
        """
        self._check_current("IncrementalGAP.add_structures")
        frames = check_structures(frames, "IncrementalGAP.add_structures")
        new = self._compute_entries(frames, y, "IncrementalGAP.add_structures")
        fitted = self.model.fitted_
        fold_rows(
            self._solver,
            self._items(new, fitted),
            self._backend(),
            column_scale=self._column_scale(fitted),
        )
        self._entries.extend(new)
        self._store(self._solver, fitted)
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
            ``features`` are skipped. With none left the model is not changed.
            On any failure (e.g. ``K_MM`` not positive definite) the model and
            the cache are left as they were.
        """
        self._check_current("IncrementalGAP.add_sparse_points")
        fitted = self.model.fitted_
        q = np.asarray(to_numpy(features), dtype=float)
        if q.ndim == 1:
            q = q[None, :]
        z = np.asarray(to_numpy(numbers)).reshape(-1)
        q_new, z_new = check_sparse_points(
            (q, z),
            fitted.sparse_features.shape[1],
            fitted.descriptor.species_numbers,
            "IncrementalGAP.add_sparse_points",
        )
        keep = self._distinct(q_new, z_new)
        if len(keep) == 0:
            return 0
        q_new, z_new = q_new[keep], z_new[keep]
        backend = self._backend()
        xp = backend.xp
        q_dev = backend.asarray(q_new)
        delta_dev = backend.asarray(delta_per_point(self._ref_delta, z_new))
        z_all = np.concatenate([fitted.sparse_numbers, z_new])
        order = np.argsort(z_all, kind="stable")
        order_dev = backend.asarray(order)
        grown = []
        for e in self._entries:
            new_cols = structure_rows(
                None,
                e.atoms,
                e.labels,
                e.sigmas,
                fitted.e0,
                q_dev,
                z_new,
                delta_dev,
                fitted.zeta,
                desc=e.descriptor,
            ).rows
            cols = xp.take(xp.concat([e.rows.rows, new_cols], axis=1), order_dev, axis=1)
            grown.append(e.rows._replace(rows=cols))
        z_sorted = z_all[order]
        candidate = fitted.replace(
            sparse_features=np.vstack([fitted.sparse_features, q_new])[order],
            sparse_numbers=z_sorted,
            delta=delta_per_point(fitted.hyperparameters["delta"], z_sorted),
            sparse_cholesky=np.zeros((len(z_sorted),) * 2),
            coefficients=np.zeros(len(z_sorted)),
            r_factor=np.zeros((len(z_sorted),) * 2),
            qtb=np.zeros(len(z_sorted)),
        )
        before = ([e.rows for e in self._entries], self._solver)
        try:
            for e, r in zip(self._entries, grown, strict=True):
                e.rows = r
            self._solve_all(candidate)
        except BaseException:  # leave the model and the cache as they were
            for e, r in zip(self._entries, before[0], strict=True):
                e.rows = r
            self._solver = before[1]
            self.model.fitted_ = fitted
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
        self._check_current("IncrementalGAP.optimize_hyperparameters")
        model = self.model
        if not model.optimize:
            raise InvalidParameterError(
                "IncrementalGAP.optimize_hyperparameters: the model's 'optimize' is False; "
                "set it to True or to a list of hyperparameter names."
            )
        fitted = model.fitted_
        backend = self._backend()
        ref_delta = delta_per_point(self._ref_delta, fitted.sparse_numbers)
        l_ref = sparse_cholesky(
            fitted.sparse_features,
            fitted.sparse_numbers,
            ref_delta,
            fitted.zeta,
            fitted.jitter,
            backend,
        )
        species = list(self._ref_delta)
        params = model.get_params(deep=False)
        initial = {
            **params,
            "delta": params["delta"]
            if isinstance(params["delta"], dict)
            else dict.fromkeys(species, params["delta"]),
        }
        result = optimize_hyperparameters(
            [e.rows for e in self._entries],
            optimize=model.optimize,
            start={"delta": self._ref_delta, **self._ref_noise.defaults},
            sparse_numbers=fitted.sparse_numbers,
            delta=ref_delta,
            l_factor=l_ref,
            backend=backend,
            initial=initial,
        )
        hyper = result.hyperparameters
        noise = fitted.noise.with_defaults(**{k: hyper[k] for k in fitted.noise.defaults})
        self._store(
            result.solver,
            fitted.replace(
                hyperparameters=hyper,
                delta=result.delta,
                sparse_cholesky=result.l_factor,
                noise=noise,
            ),
            lml=result.log_marginal_likelihood,
        )

    # --------------------------------------------------------------- checks
    def _distinct(self, q_new: np.ndarray, z_new: np.ndarray) -> np.ndarray:
        """Indices of the rows of ``q_new`` that are not, to ``DUPLICATE_TOLERANCE`` in
        every component, a sparse point of the same species or an earlier row."""
        fitted = self.model.fitted_
        q_old, z_old = fitted.sparse_features, fitted.sparse_numbers
        keep: list[int] = []
        for k, (row, z) in enumerate(zip(q_new, z_new, strict=True)):
            earlier = [j for j in keep if z_new[j] == z]
            same = np.vstack([q_old[z_old == z], q_new[earlier]])
            if len(same) and np.min(np.max(np.abs(same - row), axis=1)) <= DUPLICATE_TOLERANCE:
                continue
            keep.append(k)
        return np.array(keep, dtype=int)
