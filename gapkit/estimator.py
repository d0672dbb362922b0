"""GAPRegressor: a SOAP-GAP potential with a scikit-learn interface."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import kernels, uncertainty
from ._validation import Labels, check_structures, is_bulk, read_labels
from .backend import DEVICES, Backend, namespace, resolve_device, to_numpy
from .descriptors import SOAP
from .design import (
    design_rows,
    local_energy_gradients,
    local_energy_rows,
    predict_structure,
)
from .exceptions import InvalidParameterError, MissingLabelError, UnknownSpeciesError
from .gp import StreamingQR, cholesky_with_jitter, log_marginal_likelihood
from .metrics import EvaluationReport, calibration_metrics, evaluate_predictions
from .sparsify import SPARSE_METHODS, select_sparse_points

__all__ = ["GAPRegressor"]

#: Rows of the design matrix gathered before they are folded into the R factor.
ROWS_PER_BLOCK = 8192
#: Sparse-point candidates kept per species: this many per sparse point ...
CANDIDATES_PER_SPARSE = 20
#: ... and at least this many (all environments of smaller data sets).
MIN_CANDIDATES = 20000


class _Reservoir:
    """A uniform random sample of at most ``size`` rows from a stream of blocks."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self._rows: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._count = 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self._rows.append(rows)
        self._keys.append(self.rng.random(len(rows)))
        self._count += len(rows)
        if self._count > 2 * self.size:
            self._shrink()

    def _shrink(self) -> None:
        rows, keys = np.vstack(self._rows), np.concatenate(self._keys)
        keep = np.sort(np.argsort(keys, kind="stable")[: self.size])
        self._rows, self._keys, self._count = [rows[keep]], [keys[keep]], len(keep)

    def rows(self) -> np.ndarray:
        if self._count > self.size:
            self._shrink()
        return np.vstack(self._rows) if self._rows else np.zeros((0, 0))


class GAPRegressor(RegressorMixin, BaseEstimator):
    """Gaussian approximation potential: SOAP descriptors and a sparse GP.

    The model energy of a structure is ``E = sum_i [e0(Z_i) + eps_i]`` with
    local energies ``eps_i = sum_m alpha_m delta_s^2 (q_i . q_m)^zeta`` over
    sparse environments ``m`` of the centre's species ``s``. The weights are
    fitted to total energies, forces and stresses together.

    Parameters
    ----------
    descriptor : SOAP, default=None
        Descriptor settings; ``SOAP()`` when None. Species not given there
        are taken from the training data.
    zeta : int, default=4
        Exponent of the dot-product kernel.
    delta : float or dict, default=1.0
        Energy scale in eV of the local-energy prior, one value or one per
        species (``{"Na": 1.0, "Cl": 0.5}``).
    n_sparse : int or dict, default=500
        Sparse points per species (or a dict per species).
    sparse_method : {"cur", "fps", "random"}, default="cur"
        How sparse points are chosen (see :func:`gapkit.sparsify.select_sparse_points`).
    sigma_energy : float, default=0.002
        Energy noise in eV per atom; the energy of a structure of N atoms gets
        ``sigma_energy * sqrt(N)`` (GAP's convention).
    sigma_force : float, default=0.1
        Force noise in eV/Å per component.
    sigma_virial : float, default=0.1
        Virial noise in eV per atom (times ``sqrt(N)``), applied to ``V * stress``.
    config_type_sigma : dict, default=None
        Per ``atoms.info["config_type"]`` overrides:
        ``{"slab": {"energy": 0.004, "force": 0.2, "virial": 0.2}}`` (any subset
        of the keys). Per-structure ``atoms.info`` keys ``energy_sigma``,
        ``force_sigma``, ``virial_sigma`` (same units as above) and the per-atom
        array ``atoms.arrays["force_atom_sigma"]`` override both.
    e0 : "fit", "zero" or dict, default="fit"
        Energy per isolated atom: least squares of the energies on the
        composition (``"fit"``), zero, or a dict of values per species in eV.
    jitter : float, default=1e-8
        Added to the diagonal of K_MM, relative to its mean diagonal.
    energy_key, forces_key, stress_key : str, default=None
        Where the labels are in ``atoms.info``/``atoms.arrays``; by default
        the calculator results and the usual keys are tried.
    baseline : calculator, default=None
        A gapkit electrostatics calculator (or any object with ``todict``
        understood by :func:`gapkit.electrostatics.calculator_from_dict`); the
        GAP is fitted to reference minus baseline and predicts GAP plus
        baseline.
    variance : {"dtc", "sor"}, default="dtc"
        Form of the predictive variance (see :mod:`gapkit.uncertainty`): DTC
        returns to the prior variance far from the data, SOR shrinks to zero
        there (and underestimates far from the sparse points).
    optimize : bool or list of str, default=False
        Fit hyperparameters by maximising the log marginal likelihood: True
        for ``delta`` (per species) and the three default sigmas, or a subset
        such as ``["delta", "sigma_force"]``. Bounded L-BFGS in log space; the
        design matrix is kept in memory while it runs. The constructor
        arguments are left as given; the fitted values are in
        ``hyperparameters_``.
    scheduler : str, default=None
        Run descriptor and design-matrix work on Dask: ``"local"`` starts a
        ``LocalCluster`` of ``n_jobs`` workers on this machine for each call,
        any other string is the address of a running scheduler. The R factors
        of blocks of structures are computed on the workers and reduced as a
        tree; the result equals the serial fit to rounding.
    n_jobs : int, default=1
        Processes for descriptor work (joblib; -1 for all cores), or the
        number of workers of a local Dask cluster.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where kernel blocks, design-matrix rows, the QR solve, prediction
        contractions and variances run: NumPy on the CPU, or CuPy on an NVIDIA
        GPU (``pip install "gapkit[gpu]"``). ``"auto"`` takes the GPU when CuPy
        sees one and logs its choice on the ``"gapkit"`` logger; ``device_``
        says which was used. Descriptors are always computed by DScribe on the
        CPU. On a GPU structures are processed one after the other in this
        process (``n_jobs`` then only matters for sparse-point selection), and
        Dask workers (``scheduler``) compute with NumPy.
    random_state : int, default=None
        Seed of the sparse-point selection.
    verbose : bool, default=False
        Show progress bars.

    Attributes
    ----------
    descriptor_ : SOAP
        Descriptor with its species fixed.
    species_ : list of str
    e0_ : dict of str to float
    sparse_features_ : ndarray of shape (M, n_features)
    sparse_numbers_ : ndarray of shape (M,)
    delta_ : ndarray of shape (M,)
        Energy scale of each sparse point's species.
    coefficients_ : ndarray of shape (M,)
        GP weights ``alpha``.
    r_factor_ : ndarray of shape (M, M)
        R of the QR of the weighted design matrix (posterior ``(R^T R)^-1``).
    sparse_cholesky_ : ndarray of shape (M, M)
        Lower Cholesky factor of ``K_MM + jitter``.
    hyperparameters_ : dict
        ``delta`` (per species) and the three sigmas the weights were fitted
        with: the constructor's, or the optimised ones.
    log_marginal_likelihood_ : float
        Of the training data at ``hyperparameters_``.
    std_scale_ : float
        Factor applied to every predicted standard deviation; 1 after
        ``fit``, set by :meth:`calibrate`.
    n_observations_ : dict
        Number of energy, force and virial observations used.

    Examples
    --------
    >>> from gapkit import GAPRegressor, SOAP
    >>> from gapkit.datasets import load_cu_emt
    >>> train, test = load_cu_emt()
    >>> model = GAPRegressor(SOAP(r_cut=4.0, n_max=4, l_max=3), n_sparse=50, random_state=0)
    >>> model = model.fit(train[:5])
    >>> model.predict(test[:2]).shape
    (2,)
    """

    def __init__(
        self,
        descriptor: SOAP | None = None,
        *,
        zeta: int = 4,
        delta: float | dict = 1.0,
        n_sparse: int | dict = 500,
        sparse_method: str = "cur",
        sigma_energy: float = 0.002,
        sigma_force: float = 0.1,
        sigma_virial: float = 0.1,
        config_type_sigma: dict | None = None,
        e0: str | dict = "fit",
        jitter: float = 1e-8,
        energy_key: str | None = None,
        forces_key: str | None = None,
        stress_key: str | None = None,
        baseline=None,
        variance: str = "dtc",
        optimize: bool | list = False,
        scheduler: str | None = None,
        n_jobs: int | None = 1,
        device: str = "cpu",
        random_state: int | None = None,
        verbose: bool = False,
    ):
        self.descriptor = descriptor
        self.zeta = zeta
        self.delta = delta
        self.n_sparse = n_sparse
        self.sparse_method = sparse_method
        self.sigma_energy = sigma_energy
        self.sigma_force = sigma_force
        self.sigma_virial = sigma_virial
        self.config_type_sigma = config_type_sigma
        self.e0 = e0
        self.jitter = jitter
        self.energy_key = energy_key
        self.forces_key = forces_key
        self.stress_key = stress_key
        self.baseline = baseline
        self.variance = variance
        self.optimize = optimize
        self.scheduler = scheduler
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ validation
    def _invalid(self, name: str, allowed: str):
        return InvalidParameterError(
            f"GAPRegressor: {name!r} must be {allowed}; got {getattr(self, name)!r}."
        )

    def _validate_params(self) -> None:
        def positive(name):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Real) and np.isfinite(v) and v > 0):
                raise self._invalid(name, "a positive number")

        if self.descriptor is not None and not isinstance(self.descriptor, SOAP):
            raise self._invalid("descriptor", "a gapkit.SOAP instance or None")
        if not (isinstance(self.zeta, numbers.Integral) and self.zeta >= 1):
            raise self._invalid("zeta", "an integer >= 1")
        for name in ("sigma_energy", "sigma_force", "sigma_virial"):
            positive(name)
        if not (isinstance(self.jitter, numbers.Real) and 0 <= self.jitter < 1):
            raise self._invalid("jitter", "a number in [0, 1)")
        allowed_opt = {"delta", "sigma_energy", "sigma_force", "sigma_virial"}
        if not (isinstance(self.optimize, bool) or (
                isinstance(self.optimize, (list, tuple)) and set(self.optimize) <= allowed_opt)):
            raise self._invalid("optimize", f"a bool or a list from {sorted(allowed_opt)}")
        if self.variance not in ("dtc", "sor"):
            raise self._invalid("variance", "'dtc' or 'sor'")
        if self.device not in DEVICES:
            raise self._invalid("device", "'cpu', 'cuda' or 'auto'")
        if self.sparse_method not in SPARSE_METHODS:
            raise self._invalid("sparse_method", f"one of {SPARSE_METHODS}")
        for name in ("delta", "n_sparse"):
            v = getattr(self, name)
            values = v.values() if isinstance(v, dict) else [v]
            for x in values:
                if name == "n_sparse" and not (isinstance(x, numbers.Integral) and x >= 1):
                    raise self._invalid(name, "an integer >= 1 (or a dict of them per species)")
                if name == "delta" and not (isinstance(x, numbers.Real) and x > 0):
                    raise self._invalid(name, "a positive number (or a dict of them per species)")
        if not (self.e0 in ("fit", "zero") or isinstance(self.e0, dict)):
            raise self._invalid("e0", "'fit', 'zero' or a dict of energies per species")
        if self.config_type_sigma is not None:
            if not isinstance(self.config_type_sigma, dict):
                raise self._invalid("config_type_sigma", "a dict of dicts or None")
            for ct, entry in self.config_type_sigma.items():
                if not isinstance(entry, dict) or set(entry) - {"energy", "force", "virial"}:
                    raise self._invalid(
                        "config_type_sigma",
                        "a dict {config_type: {'energy'|'force'|'virial': sigma}}",
                    )
                for key, value in entry.items():
                    if not (isinstance(value, numbers.Real) and value > 0):
                        raise InvalidParameterError(
                            f"GAPRegressor: config_type_sigma[{ct!r}][{key!r}] must be a "
                            f"positive number; got {value!r}."
                        )

    @staticmethod
    def _per_species(value, species: list[str], name: str) -> dict[str, float]:
        if isinstance(value, dict):
            missing = [s for s in species if s not in value]
            if missing:
                raise InvalidParameterError(
                    f"GAPRegressor: {name!r} has no value for {', '.join(missing)}."
                )
            return {s: value[s] for s in species}
        return dict.fromkeys(species, value)

    # -------------------------------------------------------------- helpers
    def _sigmas(self, atoms: Atoms, base: dict | None = None) -> dict:
        """Noise of the energy, the force components and the virial of a structure.

        Returns a dict with ``energy`` and ``virial`` (eV, already times
        sqrt(N)), ``force`` (n_atoms, 3) in eV/Å, and ``default`` (which of the
        three use the estimator's sigma, i.e. move with it when it is tuned).
        """
        base = base or {"sigma_energy": self.sigma_energy, "sigma_force": self.sigma_force,
                        "sigma_virial": self.sigma_virial}
        sig = {k: base[f"sigma_{k}"] for k in ("energy", "force", "virial")}
        default = dict.fromkeys(sig, True)
        ct = atoms.info.get("config_type")
        if self.config_type_sigma and ct in self.config_type_sigma:
            sig.update(self.config_type_sigma[ct])
            default.update(dict.fromkeys(self.config_type_sigma[ct], False))
        for key in ("energy", "force", "virial"):
            if f"{key}_sigma" in atoms.info:
                sig[key] = float(atoms.info[f"{key}_sigma"])
                default[key] = False
        force = np.full((len(atoms), 3), float(sig["force"]))
        if "force_atom_sigma" in atoms.arrays:
            force = np.repeat(np.asarray(atoms.arrays["force_atom_sigma"], float), 3).reshape(-1, 3)
            default["force"] = False
        root_n = np.sqrt(len(atoms))
        values = [sig["energy"], sig["virial"], *np.ravel(force)]
        if not all(np.isfinite(v) and v > 0 for v in values):
            raise InvalidParameterError(
                "GAPRegressor: sigmas must be positive numbers; got a zero, negative or NaN "
                f"sigma for a structure with config_type={ct!r}."
            )
        return {"energy": sig["energy"] * root_n, "force": force,
                "virial": sig["virial"] * root_n, "default": default}

    def _parallel(self, n_tasks: int, backend: Backend | None = None):
        """joblib over structures; in-process for a single task (e.g. an MD step)
        and for device arrays (which stay in this process)."""
        in_process = n_tasks <= 1 or (backend is not None and not backend.is_numpy)
        return Parallel(n_jobs=1 if in_process else (self.n_jobs or 1), return_as="generator")

    def _backend(self) -> Backend:
        """The array backend of ``device``; ``"auto"`` is resolved (and its choice
        logged) once per setting, not at every prediction."""
        choice = getattr(self, "_device_choice", None)
        if choice is not None and choice[0] == self.device:
            return resolve_device(choice[1], "GAPRegressor")
        backend = resolve_device(self.device, "GAPRegressor")
        self._device_choice = (self.device, backend.device)  # strings: the model pickles
        return backend

    def _progress(self, iterable, total: int, desc: str):
        return tqdm(iterable, total=total, desc=desc, disable=not self.verbose, leave=False)

    def _baseline_results(self, frames: list[Atoms], *, forces: bool, stress: bool) -> list[dict]:
        out = []
        for atoms in frames:
            a = atoms.copy()
            a.calc = self.baseline_ if hasattr(self, "baseline_") else self.baseline
            res = {"energy": a.get_potential_energy(), "energies": a.get_potential_energies()}
            if forces:
                res["forces"] = a.get_forces()
            if stress and is_bulk(a):
                res["stress"] = a.get_stress()
            out.append(res)
        return out

    def _check_known_species(self, frames: list[Atoms]) -> None:
        known = set(self.species_)
        for k, atoms in enumerate(frames):
            unknown = sorted(set(atoms.get_chemical_symbols()) - known)
            if unknown:
                raise UnknownSpeciesError(
                    f"GAPRegressor: structure {k} contains {', '.join(unknown)}, which the model "
                    f"was not fitted for (species: {', '.join(self.species_)})."
                )

    # ------------------------------------------------------------------ fit
    def fit(self, X: Sequence[Atoms], y=None, sparse_points=None) -> GAPRegressor:
        """Fit the potential to labelled structures.

        Parameters
        ----------
        X : list of ase.Atoms
            Training structures carrying energies, forces and/or stresses (see
            ``energy_key`` and friends). A structure with none of them is an
            error.
        y : array-like of shape (n_structures,), default=None
            Total energies in eV, overriding those found on the structures.
        sparse_points : tuple of (ndarray, ndarray), default=None
            ``(features, atomic_numbers)`` of sparse points to use instead of
            selecting them (normalised descriptors of shape (M, n_features));
            ``n_sparse`` and ``sparse_method`` are then ignored.

        Returns
        -------
        self : GAPRegressor
        """
        self._validate_params()
        if self.scheduler is not None and not hasattr(self, "_client"):
            from .distributed import dask_client

            with dask_client(self.scheduler, self.n_jobs) as client:
                self._client = client
                try:
                    return self.fit(X, y, sparse_points)
                finally:
                    del self._client
        frames = check_structures(X, "GAPRegressor.fit")
        labels = self._read_training_labels(frames, y)

        symbols = sorted({s for a in frames for s in a.get_chemical_symbols()},
                         key=lambda s: atomic_numbers[s])
        descriptor = clone(self.descriptor) if self.descriptor is not None else SOAP()
        if descriptor.species is None:
            descriptor.set_params(species=symbols)
        self.descriptor_ = descriptor
        self.species_ = descriptor.species_symbols
        self._check_known_species(frames)
        delta = self._per_species(self.delta, self.species_, "delta")
        n_sparse = self._per_species(self.n_sparse, self.species_, "n_sparse")

        if self.baseline is not None:
            self.baseline_ = _copy_baseline(self.baseline)
            base = self._baseline_results(frames, forces=True, stress=True)
            labels = [_subtract(lab, b) for lab, b in zip(labels, base, strict=True)]
        self.e0_ = self._fit_e0(frames, labels)

        if sparse_points is not None:
            self.sparse_features_, self.sparse_numbers_ = self._check_sparse_points(
                sparse_points, descriptor
            )
        else:
            self.sparse_features_, self.sparse_numbers_ = self._select_sparse(
                frames, descriptor, n_sparse
            )
        self.delta_ = np.array([delta[chemical_symbols[z]] for z in self.sparse_numbers_])
        m = len(self.sparse_numbers_)
        # Dask workers compute their blocks with NumPy; so does the reduction here
        backend = self._backend() if not hasattr(self, "_client") else resolve_device("cpu")
        self.device_ = backend.device
        xp = backend.xp

        # K_MM + jitter = L L^T (block diagonal over species); rows are solved in the
        # basis whitened by L, the prior rows being the identity (see gapkit.gp).
        self.sparse_cholesky_ = self._sparse_cholesky(backend)
        solver = StreamingQR(m, prior=backend.asarray(self.sparse_cholesky_))

        # Pass 2: derivatives -> weighted design-matrix rows, folded into R block by block.
        self.hyperparameters_ = {
            "delta": delta,
            "sigma_energy": self.sigma_energy,
            "sigma_force": self.sigma_force,
            "sigma_virial": self.sigma_virial,
        }
        if hasattr(self, "_client") and not self.optimize:
            return self._fit_rows_on_dask(frames, labels, solver)
        counts = {"energy": 0, "forces": 0, "virial": 0}
        kept = []  # all rows, only when hyperparameters are optimised
        block, n_rows, sigmas = [], 0, []
        for k_rows, y, sigma, kind, c in self._design_rows_for(frames, labels, "fit", backend):
            for key in counts:
                counts[key] += c[key]
            sigmas.append(sigma)
            if self.optimize:
                kept.append((k_rows, y, sigma, kind))
                continue
            block.append((k_rows / backend.asarray(sigma)[:, None], backend.asarray(y / sigma)))
            n_rows += len(y)
            if n_rows >= ROWS_PER_BLOCK:
                solver.add_rows(xp.concat([b[0] for b in block], axis=0),
                                xp.concat([b[1] for b in block]))
                block, n_rows = [], 0
        if block:
            solver.add_rows(xp.concat([b[0] for b in block], axis=0),
                            xp.concat([b[1] for b in block]))
        self.n_observations_ = counts
        if self.optimize:
            solver = self._optimize_hyperparameters(kept, backend)
        else:
            self.log_marginal_likelihood_ = log_marginal_likelihood(
                solver, self.sparse_cholesky_, np.concatenate(sigmas)
            )
        self._store_solution(solver)
        self.std_scale_ = 1.0
        return self

    def _fit_rows_on_dask(self, frames, labels, solver: StreamingQR) -> GAPRegressor:
        """Pass 2 on Dask: an R factor per block of structures, merged as a tree
        while the blocks come in (memory independent of the number of blocks)."""
        from .distributed import reduce_blocks_qr

        client = self._client
        base = {k: self.hyperparameters_[k] for k in ("sigma_energy", "sigma_force",
                                                      "sigma_virial")}
        arrays = client.scatter(
            (self.descriptor_, self.e0_, self.sparse_features_, self.sparse_numbers_,
             self.delta_, self.zeta, self.sparse_cholesky_), broadcast=True, hash=False)

        def blocks():
            current, n_rows = [], 0
            for atoms, lab in zip(frames, labels, strict=True):
                current.append((atoms, lab, self._sigmas(atoms, base)))
                n_rows += 1 + 3 * len(atoms) + 6
                if n_rows >= ROWS_PER_BLOCK:
                    yield current
                    current, n_rows = [], 0
            if current:
                yield current

        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        data = reduce_blocks_qr(client, _block_solver, blocks(), arrays,
                                window=2 * n_workers)
        solver.merge(data)
        self.n_observations_ = {k: int(data.meta.get(k, 0))
                                for k in ("energy", "forces", "virial")}
        self.log_marginal_likelihood_ = log_marginal_likelihood(
            solver, self.sparse_cholesky_, n_data=int(data.meta["n_data"]),
            sum_log_sigma=float(data.meta["sum_log_sigma"]),
        )
        self._store_solution(solver)
        self.std_scale_ = 1.0
        return self

    def _store_solution(self, solver: StreamingQR) -> None:
        self.coefficients_ = to_numpy(solver.solve())
        self.r_factor_ = to_numpy(solver.r)
        self.qtb_ = to_numpy(solver.qtb)
        self.residual_ = solver.residual

    def _design_rows_for(self, frames: list[Atoms], labels: list[Labels], desc: str,
                         backend: Backend | None = None):
        """Generator of (rows, y, sigma, kind, counts) per structure at the fitted
        sparse points and hyperparameters; rows are arrays of ``backend``
        (``device``'s when None)."""
        backend = self._backend() if backend is None else backend
        base = {k: self.hyperparameters_[k] for k in ("sigma_energy", "sigma_force",
                                                      "sigma_virial")}
        q_sparse, delta = backend.asarray(self.sparse_features_), backend.asarray(self.delta_)
        jobs = (
            delayed(_structure_rows)(
                self.descriptor_, a, lab, self._sigmas(a, base), self.e0_,
                q_sparse, self.sparse_numbers_, delta, self.zeta,
            )
            for a, lab in zip(frames, labels, strict=True)
        )
        return self._progress(self._parallel(len(frames), backend)(jobs), len(frames), desc)

    def partial_fit(self, X: Sequence[Atoms], y=None) -> GAPRegressor:
        """Add labelled structures to a fitted model without refitting.

        The new design-matrix rows are folded into the stored R factor and the
        weights re-solved: the cost is that of the new structures alone. The
        sparse points, ``e0_`` and the hyperparameters stay as fitted (refit
        with :meth:`fit` to renew them). An unfitted model is simply fitted.

        Returns
        -------
        self : GAPRegressor
        """
        if not hasattr(self, "coefficients_"):
            return self.fit(X, y)
        frames = check_structures(X, "GAPRegressor.partial_fit")
        labels = self._labels_to_learn(frames, y)
        backend = self._backend()
        solver = StreamingQR.from_factors(backend.asarray(self.r_factor_),
                                          backend.asarray(self.qtb_), self.residual_)
        rows = self._design_rows_for(frames, labels, "update", backend)
        for k_rows, y_rows, sigma, _, c in rows:
            solver.add_rows(k_rows / backend.asarray(sigma)[:, None],
                            backend.asarray(y_rows / sigma))
            for key in self.n_observations_:
                self.n_observations_[key] += c[key]
        self._store_solution(solver)
        return self

    def _optimize_hyperparameters(self, kept: list, backend: Backend) -> StreamingQR:
        """Maximise the log marginal likelihood over log delta and log sigmas.

        The rows were built with the initial ``delta``; a new ``delta`` scales
        the columns of K_NM by ``(delta / delta0)^2`` and L by ``delta / delta0``,
        and new default sigmas rescale the rows that use them, so each trial is
        one QR of the cached rows.
        """
        xp = backend.xp
        k_rows = xp.concat([k[0] for k in kept], axis=0)
        y = np.concatenate([k[1] for k in kept])
        sigma0 = np.concatenate([k[2] for k in kept])
        kind = np.concatenate([k[3] for k in kept])
        del kept
        names = self._optimized_names(kind)
        z_cols = self.sparse_numbers_
        delta0 = self.delta_.copy()
        l0 = self.sparse_cholesky_
        start = {"sigma_energy": self.sigma_energy, "sigma_force": self.sigma_force,
                 "sigma_virial": self.sigma_virial,
                 **{f"delta_{s}": self.hyperparameters_["delta"][s] for s in self.species_}}
        x0 = np.log([start[n] for n in names])
        kind_of = {"sigma_energy": _KIND_ENERGY, "sigma_force": _KIND_FORCE,
                   "sigma_virial": _KIND_VIRIAL}

        def unpack(x):
            values = dict(start)
            values.update(zip(names, np.exp(x), strict=True))
            sigma = sigma0.copy()
            for name, k in kind_of.items():
                sigma[kind == k] *= values[name] / start[name]
            ratio = np.array([values[f"delta_{chemical_symbols[z]}"] for z in z_cols]) / delta0
            return values, sigma, ratio

        l0_d = backend.asarray(l0)

        def build(x):
            _, sigma, ratio = unpack(x)
            ratio_d, sigma_d = backend.asarray(ratio), backend.asarray(sigma)
            solver = StreamingQR(len(z_cols), prior=l0_d * ratio_d[:, None])
            solver.add_rows(k_rows * (ratio_d**2)[None, :] / sigma_d[:, None],
                            backend.asarray(y / sigma))
            return solver, sigma, ratio

        def objective(x):
            solver, sigma, ratio = build(x)
            return -log_marginal_likelihood(solver, l0 * ratio[:, None], sigma)

        bounds = [(np.log(1e-6), np.log(1e2)) if n.startswith("sigma") else
                  (np.log(1e-4), np.log(1e4)) for n in names]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # central differences: the LML is a sum of large terms, so forward
            # differences with tiny steps are dominated by rounding
            result = scipy.optimize.minimize(
                objective, x0, method="L-BFGS-B", bounds=bounds, jac="3-point",
                options={"maxiter": 100, "finite_diff_rel_step": 1e-4},
            )
        if not result.success:
            # L-BFGS stops ("ABNORMAL") when finite-difference gradients get noisy
            # near the optimum; a derivative-free polish from there settles it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                polish = scipy.optimize.minimize(
                    objective, result.x, method="Powell", bounds=bounds,
                    options={"xtol": 1e-3, "ftol": 1e-9, "maxfev": 400},
                )
            converged = polish.success
            if polish.fun <= result.fun:
                result = polish
        else:
            converged = True
        if not converged:
            warnings.warn(
                f"GAPRegressor: hyperparameter optimisation did not converge ({result.message}); "
                "using the best values found.",
                ConvergenceWarning,
                stacklevel=3,
            )
        values, sigma, ratio = unpack(result.x)
        solver, sigma, ratio = build(result.x)
        self.delta_ = delta0 * ratio
        self.sparse_cholesky_ = l0 * ratio[:, None]
        self.log_marginal_likelihood_ = -float(result.fun)
        self.hyperparameters_ = {
            "delta": {s: float(values[f"delta_{s}"]) for s in self.species_},
            "sigma_energy": float(values["sigma_energy"]),
            "sigma_force": float(values["sigma_force"]),
            "sigma_virial": float(values["sigma_virial"]),
        }
        return solver

    def _optimized_names(self, kind: np.ndarray) -> list[str]:
        wanted = (["delta", "sigma_energy", "sigma_force", "sigma_virial"]
                  if self.optimize is True else list(self.optimize))
        names = []
        for w in wanted:
            if w == "delta":
                names += [f"delta_{s}" for s in self.species_]
            elif np.any(kind == {"sigma_energy": _KIND_ENERGY, "sigma_force": _KIND_FORCE,
                                 "sigma_virial": _KIND_VIRIAL}[w]):
                names.append(w)
        return names

    def _select_sparse(self, frames, descriptor, n_sparse) -> tuple[np.ndarray, np.ndarray]:
        """Pass 1: descriptors of every atom -> sparse points per species.

        Candidates are kept in a uniform random reservoir of at most
        ``max(CANDIDATES_PER_SPARSE * n_sparse, MIN_CANDIDATES)`` environments
        per species, so memory does not grow with the data set.
        """
        jobs = (delayed(descriptor.features)(a) for a in frames)
        rng = np.random.default_rng(self.random_state)
        pools = {atomic_numbers[s]: _Reservoir(
            max(CANDIDATES_PER_SPARSE * n_sparse[s], MIN_CANDIDATES), rng)
            for s in self.species_}
        if hasattr(self, "_client"):
            from .distributed import map_ordered

            feats = map_ordered(self._client, _features_of, frames, descriptor)
        else:
            feats = self._parallel(len(frames))(jobs)
        feats = self._progress(feats, len(frames), "descriptors")
        for f, a in zip(feats, frames, strict=True):
            for z, pool in pools.items():
                pool.add(f[a.numbers == z])
        q_sparse, z_sparse = [], []
        for s in self.species_:
            z = atomic_numbers[s]
            x = pools[z].rows()
            if len(x) == 0:
                continue
            idx = select_sparse_points(x, n_sparse[s], self.sparse_method, rng)
            q_sparse.append(x[idx])
            z_sparse.append(np.full(len(idx), z))
        return np.vstack(q_sparse), np.concatenate(z_sparse)

    def _check_sparse_points(self, sparse_points, descriptor) -> tuple[np.ndarray, np.ndarray]:
        try:
            q, z = (np.asarray(a) for a in sparse_points)
        except (TypeError, ValueError) as err:
            raise InvalidParameterError(
                "GAPRegressor.fit: 'sparse_points' must be a tuple (features, atomic_numbers)."
            ) from err
        if q.ndim != 2 or q.shape[1] != descriptor.n_features or z.shape != (len(q),):
            raise InvalidParameterError(
                f"GAPRegressor.fit: 'sparse_points' must be features of shape (M, "
                f"{descriptor.n_features}) and M atomic numbers; got {q.shape} and {z.shape}."
            )
        unknown = sorted(set(z.tolist()) - set(descriptor.species_numbers.tolist()))
        if unknown:
            raise InvalidParameterError(
                f"GAPRegressor.fit: sparse points of species {unknown} the model does not have."
            )
        order = np.argsort(z, kind="stable")
        return q[order].astype(float), z[order].astype(int)

    def _sparse_cholesky(self, backend: Backend) -> np.ndarray:
        """Block-diagonal (per species) Cholesky factor of ``K_MM + jitter`` (host array)."""
        m = len(self.sparse_numbers_)
        l_mm = np.zeros((m, m))
        for z in np.unique(self.sparse_numbers_):
            cols = np.flatnonzero(self.sparse_numbers_ == z)
            qs = backend.asarray(self.sparse_features_[cols])
            k_mm = kernels.kernel(qs, qs, self.zeta, float(self.delta_[cols[0]]))
            l_mm[np.ix_(cols, cols)] = to_numpy(cholesky_with_jitter(k_mm, self.jitter))
        return l_mm

    def _labels_to_learn(self, frames: list[Atoms], y) -> list[Labels]:
        """Labels of new structures for a fitted model (species checked), less the
        baseline's contribution."""
        self._check_known_species(frames)
        labels = self._read_training_labels(frames, y)
        if self.baseline is not None:
            base = self._baseline_results(frames, forces=True, stress=True)
            labels = [_subtract(lab, b) for lab, b in zip(labels, base, strict=True)]
        return labels

    def _read_training_labels(self, frames: list[Atoms], y) -> list[Labels]:
        labels = [
            read_labels(a, self.energy_key, self.forces_key, self.stress_key) for a in frames
        ]
        if y is not None:
            y = np.asarray(y, dtype=float).reshape(-1)
            if len(y) != len(frames):
                raise InvalidParameterError(
                    f"GAPRegressor.fit: y has {len(y)} energies for {len(frames)} structures."
                )
            for lab, e in zip(labels, y, strict=True):
                lab.energy = float(e)
        missing = [k for k, lab in enumerate(labels) if lab.empty]
        if missing:
            raise MissingLabelError(
                f"GAPRegressor.fit: {len(missing)} structure(s) carry no energy, forces or "
                f"stress (first: structure {missing[0]}). Label them, or name the keys with "
                "energy_key/forces_key/stress_key."
            )
        return labels

    def _fit_e0(self, frames: list[Atoms], labels: list[Labels]) -> dict[str, float]:
        if self.e0 == "zero":
            return dict.fromkeys(self.species_, 0.0)
        if isinstance(self.e0, dict):
            return self._per_species({k: float(v) for k, v in self.e0.items()},
                                     self.species_, "e0")
        rows, energies = [], []
        for atoms, lab in zip(frames, labels, strict=True):
            if lab.energy is None:
                continue
            syms = atoms.get_chemical_symbols()
            rows.append([syms.count(s) for s in self.species_])
            energies.append(lab.energy)
        if not rows:
            return dict.fromkeys(self.species_, 0.0)
        comp = np.array(rows, dtype=float)
        e0, *_ = np.linalg.lstsq(comp, np.array(energies), rcond=None)
        return {s: float(v) for s, v in zip(self.species_, e0, strict=True)}

    # -------------------------------------------------------------- predict
    def _prepare_predict(self, X, owner: str) -> list[Atoms]:
        check_is_fitted(self, "coefficients_")
        frames = check_structures(X, owner)
        self._check_known_species(frames)
        return frames

    def _predict_frames(
        self,
        frames: list[Atoms],
        *,
        forces: bool,
        stress: bool,
        std: bool = False,
        desc: str = "predict",
    ) -> list[dict]:
        backend = self._backend()
        on = backend.asarray
        arrays = _ModelArrays(
            e0=self.e0_,
            q_sparse=on(self.sparse_features_),
            z_sparse=self.sparse_numbers_,
            weights=on(self.coefficients_ * self.delta_**2),
            delta=on(self.delta_),
            zeta=self.zeta,
            r_factor=on(self.r_factor_) if std else None,
            l_factor=on(self.sparse_cholesky_) if std else None,
            variance=self.variance,
            std_scale=getattr(self, "std_scale_", 1.0),
        )
        if not backend.is_numpy:  # device arrays stay in this process
            results = [_predict_one(self.descriptor_, a, arrays, forces, stress, std)
                       for a in self._progress(frames, len(frames), desc)]
            return self._add_baseline(frames, results, forces=forces, stress=stress)
        if self.scheduler is not None and len(frames) > 1:
            from .distributed import dask_client, map_ordered

            with dask_client(self.scheduler, self.n_jobs) as client:
                results = list(self._progress(
                    map_ordered(client, _predict_task, frames, self.descriptor_, arrays,
                                (forces, stress, std)), len(frames), desc))
            return self._add_baseline(frames, results, forces=forces, stress=stress)
        # one structure (an MD step): spread its centres over the processes instead
        per_structure_jobs = (self.n_jobs or 1) if len(frames) == 1 else 1
        jobs = (
            delayed(_predict_one)(self.descriptor_, a, arrays, forces, stress, std,
                                  per_structure_jobs)
            for a in frames
        )
        results = list(self._progress(self._parallel(len(frames))(jobs), len(frames), desc))
        return self._add_baseline(frames, results, forces=forces, stress=stress)

    def _add_baseline(self, frames, results, *, forces: bool, stress: bool) -> list[dict]:
        if self.baseline is not None:
            base = self._baseline_results(frames, forces=forces, stress=stress)
            for res, b in zip(results, base, strict=True):
                for key, value in b.items():
                    if key in res:
                        res[key] = res[key] + value
        return results

    def predict(self, X: Sequence[Atoms], return_std: bool = False):
        """Total energies in eV.

        Parameters
        ----------
        X : list of ase.Atoms
        return_std : bool, default=False
            Also return the posterior standard deviation of each energy (eV),
            in the form set by ``variance``.

        Returns
        -------
        energies : ndarray of shape (n_structures,)
        energy_std : ndarray of shape (n_structures,)
            Only with ``return_std=True``.
        """
        frames = self._prepare_predict(X, "GAPRegressor.predict")
        res = self._predict_frames(frames, forces=False, stress=False, std=return_std)
        energies = np.array([r["energy"] for r in res])
        if return_std:
            return energies, np.array([r["energy_std"] for r in res])
        return energies

    def predict_local_energies(self, X: Sequence[Atoms], return_std: bool = False):
        """Per-atom energies ``e0(Z_i) + eps_i`` in eV, one array per structure.

        With ``return_std=True`` also their standard deviations (eV).
        """
        frames = self._prepare_predict(X, "GAPRegressor.predict_local_energies")
        res = self._predict_frames(frames, forces=False, stress=False, std=return_std)
        local = [r["energies"] for r in res]
        if return_std:
            return local, [r["energies_std"] for r in res]
        return local

    def predict_forces(self, X: Sequence[Atoms], return_std: bool = False):
        """Forces in eV/Å, a list of arrays of shape (n_atoms, 3).

        With ``return_std=True`` also the standard deviation of each force
        component (eV/Å), a list of arrays of the same shapes.
        """
        frames = self._prepare_predict(X, "GAPRegressor.predict_forces")
        res = self._predict_frames(frames, forces=True, stress=False, std=return_std)
        forces = [r["forces"] for r in res]
        if return_std:
            return forces, [r["forces_std"] for r in res]
        return forces

    def predict_stress(self, X: Sequence[Atoms], return_std: bool = False):
        """Stresses in eV/Å³ (ASE sign, Voigt order), shape (n_structures, 6).

        Structures that are not periodic in all three directions get NaN.
        With ``return_std=True`` also the standard deviation of each component
        (eV/Å³, same shape).
        """
        frames = self._prepare_predict(X, "GAPRegressor.predict_stress")
        res = self._predict_frames(frames, forces=False, stress=True, std=return_std)
        stress = np.array([r.get("stress", np.full(6, np.nan)) for r in res])
        if return_std:
            return stress, np.array([r.get("stress_std", np.full(6, np.nan)) for r in res])
        return stress

    def predict_all(
        self, X: Sequence[Atoms], *, stress: bool = True, return_std: bool = False
    ) -> list[dict]:
        """Everything in one pass, one dict per structure.

        Keys: ``energy``, ``energies`` (per atom), ``forces`` and, for bulk
        cells, ``stress``; with ``return_std=True`` also ``energy_std``,
        ``energies_std``, ``forces_std`` and (bulk cells) ``stress_std``.
        """
        frames = self._prepare_predict(X, "GAPRegressor.predict_all")
        return self._predict_frames(frames, forces=True, stress=stress, std=return_std)

    # ------------------------------------------------------------- metrics
    def evaluate(self, X: Sequence[Atoms]) -> EvaluationReport:
        """Errors against the labels carried by ``X``.

        Returns
        -------
        EvaluationReport
            A dict of metrics (energy RMSE/MAE per atom in eV/atom, force
            RMSE/MAE in eV/Å, stress RMSE in eV/Å³, counts) that prints as a
            table.
        """
        frames = self._prepare_predict(X, "GAPRegressor.evaluate")
        labels = [read_labels(a, self.energy_key, self.forces_key, self.stress_key)
                  for a in frames]
        predictions = self._predict_frames(frames, forces=True, stress=True, desc="evaluate")
        return evaluate_predictions(frames, labels, predictions)

    def score(self, X: Sequence[Atoms], y=None, sample_weight=None) -> float:
        """Coefficient of determination R² of the energies per atom.

        ``y`` (total energies) overrides the labels on the structures.
        """
        frames = self._prepare_predict(X, "GAPRegressor.score")
        if y is None:
            labels = [read_labels(a, self.energy_key, None, None).energy for a in frames]
            if any(e is None for e in labels):
                raise MissingLabelError("GAPRegressor.score: a structure has no energy label.")
            y = labels
        n = np.array([len(a) for a in frames])
        pred = self.predict(frames)
        return float(r2_score(np.asarray(y) / n, pred / n, sample_weight=sample_weight))

    def calibrate(self, X: Sequence[Atoms], on: str = "forces") -> GAPRegressor:
        """Fit :attr:`std_scale_` on validation structures.

        The factor ``s`` maximises the Gaussian likelihood of the errors with
        standard deviations ``s * std``: ``s^2 = mean((error / std)^2)`` over
        the force components (``on="forces"``) or the energies
        (``on="energy"``).

        Returns
        -------
        self : GAPRegressor
        """
        if on not in ("forces", "energy"):
            raise InvalidParameterError(
                f"GAPRegressor.calibrate: 'on' must be 'forces' or 'energy'; got {on!r}."
            )
        frames = self._prepare_predict(X, "GAPRegressor.calibrate")
        labels = [read_labels(a, self.energy_key, self.forces_key, self.stress_key)
                  for a in frames]
        self.std_scale_ = 1.0
        res = self._predict_frames(frames, forces=on == "forces", stress=False, std=True)
        if on == "forces":
            pairs = [(r["forces"] - lab.forces, r["forces_std"])
                     for r, lab in zip(res, labels, strict=True) if lab.forces is not None]
        else:
            pairs = [(np.array([r["energy"] - lab.energy]), np.array([r["energy_std"]]))
                     for r, lab in zip(res, labels, strict=True) if lab.energy is not None]
        if not pairs:
            raise MissingLabelError(f"GAPRegressor.calibrate: no {on} labels to calibrate on.")
        errors = np.concatenate([p[0].ravel() for p in pairs])
        stds = np.concatenate([p[1].ravel() for p in pairs])
        self.std_scale_ = calibration_metrics(errors, stds)["scale"]
        return self

    # ------------------------------------------------------------ utilities
    def calculator(self, **kwargs):
        """An ASE calculator (:class:`gapkit.GAPCalculator`) driven by this model."""
        from .calculator import GAPCalculator

        return GAPCalculator(self, **kwargs)

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (see :func:`gapkit.load`)."""
        from .io import save_model

        save_model(self, path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags


# -------------------------------------------------------------------- workers
#: Row kinds of the design matrix; -1 marks rows whose sigma is fixed by an override.
_KIND_ENERGY, _KIND_FORCE, _KIND_VIRIAL, _KIND_FIXED = 0, 1, 2, -1


def _structure_rows(descriptor, atoms, labels, sigmas, e0, q_sparse, z_sparse, delta, zeta):
    """Design-matrix rows of one structure (runs in a worker).

    Returns rows (n, M) of K_NM, targets (n,), noise sigma (n,), row kind (n,)
    and the number of energy, force and virial observations.
    """
    need_f = labels.forces is not None
    need_v = labels.stress is not None
    desc = (
        descriptor.features_and_derivatives(atoms)
        if (need_f or need_v)
        else _features_only(descriptor, atoms)
    )
    rows = design_rows(desc, q_sparse, z_sparse, delta, zeta, forces=need_f, virial=need_v)
    xp = namespace(q_sparse)
    default = sigmas["default"]
    parts = []  # (rows, targets, sigma, kind)
    counts = {"energy": 0, "forces": 0, "virial": 0}
    if labels.energy is not None:
        e_ref = labels.energy - sum(e0[s] for s in atoms.get_chemical_symbols())
        kind = _KIND_ENERGY if default["energy"] else _KIND_FIXED
        parts.append((xp.reshape(rows["energy"], (1, -1)), [e_ref], [sigmas["energy"]], [kind]))
        counts["energy"] = 1
    if need_f:
        n = labels.forces.size
        kind = _KIND_FORCE if default["force"] else _KIND_FIXED
        parts.append((xp.reshape(rows["forces"], (n, -1)), labels.forces.ravel(),
                      sigmas["force"].ravel(), np.full(n, kind)))
        counts["forces"] = n
    if need_v:
        kind = _KIND_VIRIAL if default["virial"] else _KIND_FIXED
        parts.append((rows["virial"], labels.stress * atoms.get_volume(),
                      np.full(6, sigmas["virial"]), np.full(6, kind)))
        counts["virial"] = 6
    return (
        xp.concat([p[0] for p in parts], axis=0),
        np.concatenate([np.asarray(p[1], float) for p in parts]),
        np.concatenate([np.asarray(p[2], float) for p in parts]),
        np.concatenate([np.asarray(p[3], int) for p in parts]),
        counts,
    )


def _features_of(atoms, descriptor):
    return descriptor.features(atoms)


def _predict_task(atoms, descriptor, arrays, flags):
    return _predict_one(descriptor, atoms, arrays, *flags)


def _block_solver(block, arrays) -> StreamingQR:
    """R factor of one block's weighted design-matrix rows (runs on a Dask worker),
    with the block's observation counts and noise in ``meta``."""
    descriptor, e0, q_sparse, z_sparse, delta, zeta, l_factor = arrays
    solver = StreamingQR(len(z_sparse), prior=l_factor, prior_rows=False)
    meta = {"energy": 0, "forces": 0, "virial": 0, "n_data": 0, "sum_log_sigma": 0.0}
    rows, targets = [], []
    for atoms, labels, sig in block:
        k_rows, y, sigma, _, c = _structure_rows(descriptor, atoms, labels, sig, e0, q_sparse,
                                                 z_sparse, delta, zeta)
        rows.append(k_rows / sigma[:, None])
        targets.append(y / sigma)
        for key in ("energy", "forces", "virial"):
            meta[key] += c[key]
        meta["n_data"] += len(sigma)
        meta["sum_log_sigma"] += float(np.sum(np.log(sigma)))
    solver.add_rows(np.vstack(rows), np.concatenate(targets))  # one fold per block
    solver.meta = meta
    return solver


def _features_only(descriptor, atoms):
    from .descriptors import StructureDescriptor

    return StructureDescriptor(descriptor.features(atoms), atoms.numbers.copy())


@dataclass(frozen=True)
class _ModelArrays:
    """What a worker needs to predict: the fitted arrays, no estimator."""

    e0: dict
    q_sparse: np.ndarray
    z_sparse: np.ndarray
    weights: np.ndarray
    delta: np.ndarray
    zeta: int
    r_factor: np.ndarray | None
    l_factor: np.ndarray | None
    variance: str
    std_scale: float = 1.0


#: Centres whose descriptor derivatives are held at once when predicting
#: without uncertainties (bounds memory for large cells).
CENTRE_CHUNK = 128
#: A single structure at least this big is split over ``n_jobs`` processes.
MIN_ATOMS_SPLIT = 32


def _predict_chunk(descriptor, atoms, centres, pairs, arrays: _ModelArrays, forces, stress,
                   keep=False):
    """Local energies of ``centres`` and their contributions to forces and virial
    (and the descriptor itself with ``keep``)."""
    if not keep and isinstance(arrays.q_sparse, np.ndarray):
        # NumPy: contract each centre's derivatives as they come, never store them
        def gradient(q, numbers):
            return local_energy_gradients(q, numbers, arrays.q_sparse, arrays.z_sparse,
                                          arrays.weights, arrays.zeta)

        eps, f, v = descriptor.contract_derivatives(atoms, gradient, centres, pairs)
        return centres, {"energies": eps, "forces": f, "virial": v}, None
    desc = descriptor.features_and_derivatives(atoms, centres=centres, neighbours=pairs)
    res = predict_structure(desc, arrays.q_sparse, arrays.z_sparse, arrays.weights,
                            arrays.zeta, forces=forces, virial=stress, n_atoms=len(atoms))
    return centres, res, desc if keep else None


def _predict_one(descriptor, atoms, arrays: _ModelArrays, forces, stress, std, n_jobs=1):
    """Predictions for one structure; ``n_jobs`` > 1 spreads its centres over processes."""
    stress = stress and is_bulk(atoms)
    n_atoms = len(atoms)
    e0 = np.array([arrays.e0[s] for s in atoms.get_chemical_symbols()])
    if not (forces or stress):
        desc = _features_only(descriptor, atoms)
        res = predict_structure(desc, arrays.q_sparse, arrays.z_sparse, arrays.weights,
                                arrays.zeta, forces=False, virial=False)
        energies = to_numpy(res["energies"]) + e0
        out = {"energy": float(energies.sum()), "energies": energies}
        if std:
            out.update(_predict_std(desc, arrays, False))
        return out
    pairs = descriptor.neighbour_list(atoms)
    if std:  # variances need every pair of the structure at once
        chunks = [np.arange(n_atoms)]
    else:
        n_chunks = max(-(-n_atoms // CENTRE_CHUNK), n_jobs if n_atoms >= MIN_ATOMS_SPLIT else 1)
        chunks = np.array_split(np.arange(n_atoms), n_chunks)
    if len(chunks) > 1 and n_jobs > 1 and isinstance(arrays.q_sparse, np.ndarray):
        results = Parallel(n_jobs=n_jobs)(
            delayed(_predict_chunk)(descriptor, atoms, c, pairs, arrays, forces, stress)
            for c in chunks
        )
    else:
        results = (_predict_chunk(descriptor, atoms, c, pairs, arrays, forces, stress, std)
                   for c in chunks)
    energies = np.zeros(n_atoms)
    f = np.zeros((n_atoms, 3))
    v = np.zeros((3, 3))
    desc = None  # kept (whole structure, one chunk) when stds are wanted
    for centres, res, kept in results:
        desc = kept
        energies[centres] = to_numpy(res["energies"])
        if forces:
            f += to_numpy(res["forces"])
        if stress:
            v += to_numpy(res["virial"])
    energies += e0
    out = {"energy": float(energies.sum()), "energies": energies}
    if forces:
        out["forces"] = f
    if stress:
        v = 0.5 * (v + v.T) / atoms.get_volume()
        out["stress"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
    if std:
        out.update(_predict_std(desc, arrays, forces, atoms.get_volume() if stress else None))
    return out


def _predict_std(desc, arrays: _ModelArrays, forces: bool, volume: float | None = None) -> dict:
    """Standard deviations of the local energies, the energy, the forces and (with the
    cell ``volume``) the stress."""
    xp = namespace(arrays.q_sparse)
    n_atoms = len(desc.numbers)
    m = len(arrays.z_sparse)
    delta_host = to_numpy(arrays.delta)
    delta = {int(z): float(d) for z, d in zip(arrays.z_sparse, delta_host, strict=True)}
    local_rows = local_energy_rows(desc.features, desc.numbers, arrays.q_sparse,
                                   arrays.z_sparse, arrays.delta, arrays.zeta)
    rows = [local_rows, xp.sum(local_rows, axis=0, keepdims=True)]
    stress = volume is not None
    if forces or stress:
        deriv = design_rows(desc, arrays.q_sparse, arrays.z_sparse, arrays.delta,
                            arrays.zeta, forces=forces, virial=stress)
        if forces:
            rows.append(xp.reshape(deriv["forces"], (3 * n_atoms, m)))
        if stress:
            rows.append(deriv["virial"])
    stacked = xp.concat(rows, axis=0)
    var = to_numpy(uncertainty.sor_variance(stacked, arrays.r_factor))
    if arrays.variance == "dtc":
        features = xp.asarray(desc.features)
        prior_local, prior_total = uncertainty.energy_prior_variance(
            features, desc.numbers, arrays.zeta, delta
        )
        prior = [to_numpy(prior_local), [prior_total]]
        if forces:
            prior.append(to_numpy(uncertainty.force_prior_variance(
                desc, arrays.zeta, delta, xp)).ravel())
        if stress:
            prior.append(to_numpy(uncertainty.virial_prior_variance(
                desc, arrays.zeta, delta, xp)))
        var += np.concatenate(prior) - to_numpy(
            uncertainty.nystrom_variance(stacked, arrays.l_factor))
    std = arrays.std_scale * np.sqrt(np.clip(var, 0.0, None))
    out = {"energies_std": std[:n_atoms], "energy_std": float(std[n_atoms])}
    if forces:
        out["forces_std"] = std[n_atoms + 1 : 4 * n_atoms + 1].reshape(n_atoms, 3)
    if stress:
        out["stress_std"] = std[len(std) - 6 :] / volume
    return out


def _subtract(labels: Labels, base: dict) -> Labels:
    return Labels(
        None if labels.energy is None else labels.energy - base["energy"],
        None if labels.forces is None else labels.forces - base["forces"],
        None if labels.stress is None else labels.stress - base["stress"],
    )


def _copy_baseline(baseline):
    if not hasattr(baseline, "todict"):
        raise InvalidParameterError(
            "GAPRegressor: 'baseline' must be a gapkit electrostatics calculator "
            f"(with todict()); got {type(baseline).__name__}."
        )
    from .electrostatics import calculator_from_dict

    return calculator_from_dict(baseline.todict())
