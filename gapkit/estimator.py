"""GAPRegressor: a SOAP-GAP potential with a scikit-learn interface.

The estimator keeps its constructor parameters and orchestrates: labels are
read and checked (:mod:`gapkit._validation`), sparse points chosen
(:mod:`gapkit.sparsify`), rows assembled and folded (:mod:`gapkit.rows`),
hyperparameters optimised (:mod:`gapkit.hyperopt`), and the result is one
immutable :class:`~gapkit.model.FittedGAP` in ``fitted_`` that every
prediction reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._params import GAP_CONSTRAINTS, validate_params
from ._validation import Labels, check_structures, read_labels, read_training_labels
from .backend import Backend, resolve_device, to_numpy
from .calibration import (
    FoldedRows,
    HeldOut,
    assign_folds,
    cross_validated_scales,
    held_out_mask,
    n_folds_for,
    unit_scales,
    validation_scales,
)
from .composition import fit_e0
from .descriptors import SOAP
from .exceptions import (
    InvalidParameterError,
    MissingLabelError,
    ModelFileError,
    UnknownSpeciesError,
)
from .gp import StreamingQR, log_marginal_likelihood
from .hyperopt import optimize_hyperparameters
from .io import MAX_ARRAY_ELEMENTS, is_model_file, read_model_file, write_model_file
from .metrics import EvaluationReport, evaluate_predictions
from .model import MODEL_ARRAYS, FittedGAP, copy_baseline, delta_per_point, subtract_baseline
from .rows import NoiseModel, compute_rows, fold_structures, rescale_noise
from .sparsify import check_sparse_points, select_from_features, sparse_cholesky

__all__ = ["GAPRegressor", "load"]


def _view(name: str, doc: str):
    """A read-only attribute of the fitted model (AttributeError before ``fit``)."""

    def get(self):
        fitted = self.__dict__.get("fitted_")
        if fitted is None:
            raise AttributeError(f"{type(self).__name__} is not fitted: no {name}_.")
        value = getattr(fitted, name)
        return (
            {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
            if isinstance(value, dict)
            else value
        )

    return property(get, doc=doc)


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
        Per ``info["config_type"]`` overrides (``{"slab": {"energy": 0.004,
        "force": 0.2}}``); ``info`` keys ``energy_sigma``, ``force_sigma``,
        ``virial_sigma`` and ``arrays["force_atom_sigma"]`` override both.
    e0 : "fit", "zero" or dict, default="fit"
        Energy per isolated atom: least squares of the energies on the
        composition (``"fit"``), zero, or a dict of values per species in eV.
    jitter : float, default=1e-8
        Added to the diagonal of K_MM, relative to its mean diagonal.
    energy_key, forces_key, stress_key : str, default=None
        Where the labels are in ``atoms.info``/``atoms.arrays``; by default
        the calculator results and the usual keys are tried. A key given
        here that no training structure carries is an error.
    baseline : ASE calculator, default=None
        Fitted to reference minus baseline, the GAP predicts GAP plus
        baseline. gapkit's ``Ewald``, ``PME`` and ``Coulomb`` are copied at
        ``fit`` and stored in model files; any other ASE calculator is used as
        given (not copied) and cannot be saved.
    variance : {"dtc", "sor"}, default="dtc"
        Form of the predictive variance (see :mod:`gapkit.uncertainty`): DTC
        returns to the prior variance far from the data, SOR shrinks to zero
        there (and underestimates far from the sparse points).
    optimize : bool or list of str, default=False
        Hyperparameters by maximum marginal likelihood (bounded, log space;
        the design matrix is kept in memory): True for ``delta`` per species
        and the three sigmas, or a subset (``["delta", "sigma_force"]``).
        The fitted values are in ``hyperparameters_``.
    cv : int or None, default=5
        Folds over the training structures from which ``fit`` fits the std
        scales (``std_scale_``: energy, forces, stress), so that predicted
        stds match the errors on unseen structures; the folds share the
        sparse points, and each refit is a downdate of the R factor (about
        10 % of the fit time). None leaves the stds unscaled (see
        :mod:`gapkit.calibration`).
    scheduler : str, default=None
        Dask: ``"local"`` (a ``LocalCluster`` of ``n_jobs`` workers per call)
        or a scheduler address. R factors of blocks of structures are reduced
        as a tree; the result equals the serial fit to rounding.
    n_jobs : int, default=1
        Processes for descriptor work (joblib; -1 for all cores), or the
        number of workers of a local Dask cluster.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where kernels, design-matrix rows, the QR solve and predictions run:
        NumPy, or CuPy on an NVIDIA GPU (``pip install "gapkit[gpu]"``);
        ``"auto"`` takes the GPU when CuPy sees one. Descriptors are always
        computed on the CPU; Dask workers compute with NumPy.
    random_state : int or None, default=0
        Seed of the sparse-point selection (and its candidate sample): fixed
        by default, so two fits of the same data give the same model; stored
        in model files. None draws fresh entropy at every fit.
    verbose : bool, default=False
        Show progress bars.

    Attributes
    ----------
    fitted_ : FittedGAP
        The fitted model (immutable). The attributes below are read-only
        views of it; predictions read only this object, so ``set_params``
        after ``fit`` does not change them (refit to apply new parameters).
    descriptor_ : SOAP
        Descriptor with its species fixed; ``species_`` its species.
    e0_ : dict of str to float
    sparse_features_, sparse_numbers_, delta_, coefficients_ : ndarray
        Sparse points (M, n_features), their atomic numbers, energy scale
        (eV) and GP weights ``alpha``.
    r_factor_, qtb_, residual_, sparse_cholesky_
        QR factors of the weighted design matrix (posterior ``(R^T R)^-1``)
        and the Cholesky factor of ``K_MM + jitter``.
    hyperparameters_ : dict
        ``delta`` per species and the three sigmas the weights were fitted
        with: the constructor's, or the optimised ones.
    log_marginal_likelihood_ : float
        Of the training data at ``hyperparameters_`` (kept up to date by
        ``partial_fit``).
    std_scale_ : dict
        Factor on the predicted stds per kind (``energy``, ``forces``,
        ``stress``): cross-validated by ``fit``, or from :meth:`calibrate`;
        ``calibration_`` says how they were obtained.
    n_observations_ : dict
        Energy, force and virial observations used.
    baseline_, random_state_, device_
        The baseline fitted with, the seed of the sparse points and where
        the fit ran.

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
        cv: int | None = 5,
        scheduler: str | None = None,
        n_jobs: int | None = 1,
        device: str = "cpu",
        random_state: int | None = 0,
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
        self.cv = cv
        self.scheduler = scheduler
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ----------------------------------------------------- fitted views
    descriptor_ = _view("descriptor", "Descriptor with its species fixed.")
    e0_ = _view("e0", "Energy per isolated atom (eV), per species.")
    sparse_features_ = _view("sparse_features", "Sparse points' descriptors (M, n_features).")
    sparse_numbers_ = _view("sparse_numbers", "Sparse points' atomic numbers (M,).")
    delta_ = _view("delta", "Energy scale of each sparse point (eV).")
    coefficients_ = _view("coefficients", "GP weights alpha (M,).")
    r_factor_ = _view("r_factor", "R of the QR of the weighted design matrix (M, M).")
    qtb_ = _view("qtb", "Q^T b of the least-squares problem (M,).")
    residual_ = _view("residual", "|b - A alpha|^2 at the solution.")
    sparse_cholesky_ = _view("sparse_cholesky", "Cholesky factor of K_MM + jitter.")
    hyperparameters_ = _view("hyperparameters", "delta per species and the three sigmas.")
    log_marginal_likelihood_ = _view("log_marginal_likelihood", "Of the training data.")
    std_scale_ = _view("std_scale", "Factor on the predicted stds per kind.")
    calibration_ = _view("calibration", "How the std scales were obtained.")
    n_observations_ = _view("n_observations", "Energy, force and virial observations.")
    baseline_ = _view("baseline", "The baseline calculator fitted with, or None.")
    random_state_ = _view("random_state", "Seed the sparse points were drawn with.")

    @property
    def species_(self) -> list[str]:
        """Species of the descriptor (by atomic number)."""
        return list(self.descriptor_.species_symbols)

    def __sklearn_is_fitted__(self) -> bool:
        return "fitted_" in self.__dict__

    # ------------------------------------------------------- validation
    def _validate_params(self) -> None:
        validate_params(self.get_params(deep=False), GAP_CONSTRAINTS, "GAPRegressor")
        self._noise()  # checks config_type_sigma

    def _noise(self) -> NoiseModel:
        try:
            return NoiseModel(
                self.sigma_energy, self.sigma_force, self.sigma_virial, self.config_type_sigma
            )
        except InvalidParameterError as err:
            raise InvalidParameterError(f"GAPRegressor: {err}") from None

    # ---------------------------------------------------------- helpers
    def _backend(self) -> Backend:
        return resolve_device(self.device, "GAPRegressor")

    def _progress(self, desc: str):
        return lambda it, total: tqdm(
            it, total=total, desc=desc, disable=not self.verbose, leave=False
        )

    def _run(self, extra: dict | None = None) -> dict:
        """Where and how the numeric work runs (execution settings, not the model)."""
        return {"backend": self._backend(), "n_jobs": self.n_jobs, **(extra or {})}

    def _keys(self) -> tuple:
        return (self.energy_key, self.forces_key, self.stress_key)

    def _fitted(self) -> FittedGAP:
        check_is_fitted(self)
        return self.fitted_

    def _labels(self, frames, y, owner: str, baseline) -> list[Labels]:
        """Training labels, checked, less the baseline's contribution."""
        labels = read_training_labels(frames, y, self._keys(), owner)
        return subtract_baseline(labels, frames, baseline)

    # -------------------------------------------------------------- fit
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
        frames = check_structures(X, "GAPRegressor.fit")
        if self.scheduler is None:
            return self._fit(frames, y, sparse_points, client=None)
        from .distributed import dask_client

        with dask_client(self.scheduler, self.n_jobs) as client:
            return self._fit(frames, y, sparse_points, client=client)

    def _fit(self, frames, y, sparse_points, client) -> GAPRegressor:
        owner = "GAPRegressor.fit"
        descriptor = clone(self.descriptor) if self.descriptor is not None else SOAP()
        if descriptor.species is None:
            symbols = {s for a in frames for s in a.get_chemical_symbols()}
            descriptor.set_params(species=sorted(symbols, key=atomic_numbers.get))
        species = list(descriptor.species_symbols)
        _check_listed(frames, species, owner)
        delta = {s: float(v) for s, v in _per_species(self.delta, species, "delta").items()}
        n_sparse = _per_species(self.n_sparse, species, "n_sparse")
        baseline = None if self.baseline is None else copy_baseline(self.baseline)
        labels = self._labels(frames, y, owner, baseline)
        e0 = fit_e0(self.e0, frames, labels, species)
        seed = _seed(self.random_state)
        if sparse_points is not None:
            q, z = check_sparse_points(
                sparse_points, descriptor.n_features, descriptor.species_numbers, owner
            )
        else:
            feats = _descriptor_stream(frames, descriptor, self.n_jobs, client)
            feats = self._progress("descriptors")(feats, len(frames))
            numbers = [a.numbers for a in frames]
            rng = np.random.default_rng(seed)
            q, z = select_from_features(feats, numbers, n_sparse, self.sparse_method, rng)
        backend = self._backend() if client is None else resolve_device("cpu")
        params = {
            **self.get_params(deep=False),
            "noise": self._noise(),
            "client": client,
            "baseline": baseline,
            "random_state": seed,
        }  # fitted, not as given
        run = {"progress": self._progress("fit"), "backend": backend}
        self.fitted_ = _fit_model(frames, labels, descriptor, e0, (q, z, delta), params, **run)
        self.device_ = backend.device
        return self

    def partial_fit(self, X: Sequence[Atoms], y=None) -> GAPRegressor:
        """Add labelled structures to a fitted model without refitting.

        The new design-matrix rows are folded into the stored R factor and the
        weights re-solved: the cost is that of the new structures alone. The
        sparse points, ``e0_``, the hyperparameters and the noise model stay
        as fitted (refit with :meth:`fit` to renew them); the log marginal
        likelihood is updated. An unfitted model is simply fitted.

        Returns
        -------
        self : GAPRegressor
        """
        if not self.__sklearn_is_fitted__():
            return self.fit(X, y)
        owner = "GAPRegressor.partial_fit"
        fitted = self.fitted_
        frames = check_structures(X, owner)
        fitted.check_species(frames, owner)
        labels = self._labels(frames, y, owner, fitted.baseline)
        rows = fitted.rows(frames, labels, **self._run({"progress": self._progress("update")}))
        self.fitted_ = fitted.with_rows(rows, backend=self._backend())
        return self

    # ---------------------------------------------------------- predict
    def _predict(self, X, method: str, *, forces: bool, stress: bool, std: bool) -> list[dict]:
        owner = f"GAPRegressor.{method}"
        fitted = self._fitted()
        frames = check_structures(X, owner)
        fitted.check_species(frames, owner)
        where = {"scheduler": self.scheduler, "progress": self._progress("predict")}
        return fitted.predict(frames, forces=forces, stress=stress, std=std, **self._run(where))

    def predict(self, X: Sequence[Atoms], return_std: bool = False):
        """Total energies in eV, shape (n_structures,).

        With ``return_std=True`` also the posterior standard deviation of each
        energy (eV), in the fitted ``variance`` form.
        """
        res = self._predict(X, "predict", forces=False, stress=False, std=return_std)
        return _pick(res, "energy", return_std, np.array)

    def predict_local_energies(self, X: Sequence[Atoms], return_std: bool = False):
        """Per-atom energies ``e0(Z_i) + eps_i`` in eV, one array per structure
        (and their standard deviations with ``return_std=True``)."""
        res = self._predict(X, "predict_local_energies", forces=False, stress=False, std=return_std)
        return _pick(res, "energies", return_std, list)

    def predict_forces(self, X: Sequence[Atoms], return_std: bool = False):
        """Forces in eV/Å, a list of arrays of shape (n_atoms, 3) (and the std of each
        component with ``return_std=True``)."""
        res = self._predict(X, "predict_forces", forces=True, stress=False, std=return_std)
        return _pick(res, "forces", return_std, list)

    def predict_stress(self, X: Sequence[Atoms], return_std: bool = False):
        """Stresses in eV/Å³ (ASE sign, Voigt order), shape (n_structures, 6); NaN for
        structures not periodic in three directions (std likewise)."""
        res = self._predict(X, "predict_stress", forces=False, stress=True, std=return_std)
        return _pick(res, "stress", return_std, np.array, missing=np.full(6, np.nan))

    def predict_all(
        self, X: Sequence[Atoms], *, stress: bool = True, return_std: bool = False
    ) -> list[dict]:
        """Everything in one pass, one dict per structure: ``energy``, ``energies``,
        ``forces``, ``stress`` (bulk cells) and with ``return_std`` their ``*_std``."""
        return self._predict(X, "predict_all", forces=True, stress=stress, std=return_std)

    # ---------------------------------------------------------- metrics
    def _reference(self, X, owner: str):
        frames = check_structures(X, owner)
        self._fitted().check_species(frames, owner)
        labels = [
            read_labels(a, *self._keys(), where=f"{owner}: structure {k}")
            for k, a in enumerate(frames)
        ]
        return frames, labels

    def evaluate(self, X: Sequence[Atoms]) -> EvaluationReport:
        """Errors against the labels carried by ``X``: energy RMSE/MAE per atom
        (eV/atom), force RMSE/MAE (eV/Å), stress RMSE (eV/Å³), counts; prints as a table."""
        frames, labels = self._reference(X, "GAPRegressor.evaluate")
        return evaluate_predictions(frames, labels, self.predict_all(frames))

    def score(self, X: Sequence[Atoms], y=None, sample_weight=None) -> float:
        """Coefficient of determination R² of the energies per atom (``y``, total
        energies, overrides the labels)."""
        frames, labels = self._reference(X, "GAPRegressor.score")
        if y is None:
            y = [lab.energy for lab in labels]
            if any(e is None for e in y):
                raise MissingLabelError("GAPRegressor.score: a structure has no energy label.")
        n = np.array([len(a) for a in frames])
        per_atom = np.asarray(y, float) / n
        return float(r2_score(per_atom, self.predict(frames) / n, sample_weight=sample_weight))

    def calibrate(self, X: Sequence[Atoms], on=None) -> GAPRegressor:
        """Fit :attr:`std_scale_` on validation structures instead of the
        cross-validated scales.

        For each kind (``energy``, ``forces``, ``stress``) labelled in ``X``
        (or those named by ``on``), ``s^2 = mean((error / std)^2)`` of the
        unscaled stds: the maximum likelihood scale of Gaussian errors. Other
        kinds keep their scale.

        Returns
        -------
        self : GAPRegressor
        """
        owner = "GAPRegressor.calibrate"
        frames, labels = self._reference(X, owner)
        self.fitted_ = validation_scales(self.fitted_, frames, labels, on, self._run(), owner)
        return self

    # -------------------------------------------------------- utilities
    def calculator(self, **kwargs):
        """An ASE calculator (:class:`gapkit.GAPCalculator`) driven by this model."""
        from .calculator import GAPCalculator

        return GAPCalculator(self, **kwargs)

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (JSON header and arrays, no pickle;
        see :func:`gapkit.load`). An existing file is replaced only once the new
        one is complete, and only if it is a gapkit model."""
        state, arrays = self._fitted().to_file_state()
        _check_save(state, arrays, path)
        params = self.get_params(deep=False)
        # the baseline is stored as fitted; where and how it ran is not part of the model
        params.update(descriptor=_descriptor_params(self.descriptor), baseline=None)
        params.update(scheduler=None, n_jobs=1, verbose=False)
        write_model_file(path, _json_params({"model": state, "params": params}), arrays)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags


def load(
    path, device: str | None = None, *, max_elements: int = MAX_ARRAY_ELEMENTS
) -> GAPRegressor:
    """Read a model written by :meth:`GAPRegressor.save`.

    Parameters
    ----------
    path : str or path-like
    device : {"cpu", "cuda", "auto"}, optional
        Where the loaded model computes; by default the ``device`` it was
        saved with (the arrays are stored on the host). Other execution
        settings (``scheduler``, ``n_jobs``, ``verbose``) are never taken from
        a file: they start at their defaults.
    max_elements : int, default=gapkit.io.MAX_ARRAY_ELEMENTS
        The most elements one array of the file may have (2**28, 2 GiB of
        float64; twice that in all); raise it only for a large model you trust.

    Returns
    -------
    GAPRegressor
        A fitted model giving the same predictions (and stds) as the saved one.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelFileError
        Not a gapkit model, damaged, truncated, crafted (sizes beyond the
        limits, checksums that do not match) or written by a newer gapkit.
    """
    header, arrays = read_model_file(
        path, expected=MODEL_ARRAYS, exclusive=True, max_elements=max_elements
    )
    if not isinstance(header.get("model"), dict) or not isinstance(header.get("params"), dict):
        raise ModelFileError(f"{path}: the header has no 'model' and 'params' tables.")
    fitted = FittedGAP.from_file_state(header["model"], arrays, str(path))
    params = dict(header["params"])
    for name in ("scheduler", "n_jobs", "verbose", "baseline"):  # never from a file
        params.pop(name, None)
    try:
        descriptor = params.pop("descriptor", None)
        model = GAPRegressor(
            descriptor=None if descriptor is None else SOAP(**descriptor), **params
        )
        model.baseline = None if fitted.baseline is None else copy_baseline(fitted.baseline)
        validate_params(model.get_params(deep=False), GAP_CONSTRAINTS, "GAPRegressor")
    except (TypeError, InvalidParameterError) as err:
        raise ModelFileError(f"{path}: invalid model parameters ({err}).") from err
    if device is not None:
        model.set_params(device=device)
    model.fitted_ = fitted
    model.device_ = resolve_device(model.device, "gapkit.load").device
    return model


def _check_listed(frames, species: list[str], owner: str) -> None:
    for k, atoms in enumerate(frames):
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(species))
        if unknown:
            raise UnknownSpeciesError(
                f"{owner}: structure {k} contains {', '.join(unknown)}, which the "
                f"descriptor's species do not include ({', '.join(species)})."
            )


def _json_params(params: dict) -> dict:
    """Constructor parameters as JSON values (tuples to lists, NumPy scalars to Python)."""

    def plain(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in params.items()}


def _descriptor_params(descriptor) -> dict | None:
    return None if descriptor is None else _json_params(descriptor.get_params())


def _check_save(state: dict, arrays: dict, path) -> None:
    """Refuse to write a model that ``load`` would refuse (e.g. a zero std scale
    or an infinite residual), or over a file that is not a gapkit model."""
    if Path(path).is_file() and not is_model_file(path):
        raise InvalidParameterError(
            f"GAPRegressor.save: {str(path)!r} exists and is not a gapkit model file; it "
            "is left untouched: remove it or save elsewhere."
        )
    try:
        FittedGAP.from_file_state(_json_params(state), arrays, str(path))
    except ModelFileError as err:
        reason = str(err).split(": ", 1)[-1]
        raise InvalidParameterError(
            f"GAPRegressor.save: the fitted model would not load back ({reason}); "
            "nothing was written."
        ) from None


def _seed(random_state) -> int:
    """The seed of the sparse points: as given, or (None) fresh entropy, recorded so
    that the fit can be repeated."""
    return random_state if random_state is not None else int(np.random.SeedSequence().entropy)


def _fit_model(
    frames, labels, descriptor, e0, sparse, params, *, progress, backend: Backend
) -> FittedGAP:
    """Rows of every structure folded into a QR (or the hyperparameters optimised on
    them) at the sparse points ``(q, z, delta per species)``: the fitted model, its
    std scales cross-validated over the structures (:mod:`gapkit.calibration`).
    ``params`` are the estimator's with the noise model, the Dask client, the
    fitted baseline and the seed."""
    q, z, delta = sparse
    zeta, noise, seed = params["zeta"], params["noise"], params["random_state"]
    delta_pts = delta_per_point(delta, z)
    l_mm = sparse_cholesky(q, z, delta_pts, zeta, params["jitter"], backend)
    # rows are solved in the basis whitened by L, the prior rows being the identity
    solver = StreamingQR(len(z), prior=backend.asarray(l_mm))
    hyper = {"delta": delta, **noise.defaults}
    counts = {"energy": 0, "forces": 0, "virial": 0}
    n_folds = n_folds_for(params["cv"], len(frames))
    folds = assign_folds(len(frames), max(n_folds, 1), seed)
    keep = held_out_mask(
        [_n_rows(a, lab) for a, lab in zip(frames, labels, strict=True)], len(z), seed
    )
    keep &= n_folds > 0
    cv = FoldedRows(solver, folds, keep)
    prior = keep & (params["variance"] == "dtc")
    rows_of = {"backend": backend, "n_jobs": params["n_jobs"], "prior": prior}
    client, column_scale = params["client"], None
    if client is not None and not params["optimize"]:
        structures = (frames, labels, noise, e0)
        kernel = (descriptor, q, z, delta_pts, zeta, l_mm)
        counts, n_data, sum_log = _fold_on_dask(client, cv, structures, kernel, rows_of)
        cv.merge_into(solver)
    else:
        rows = compute_rows(
            descriptor,
            frames,
            labels,
            noise,
            e0,
            q,
            z,
            delta_pts,
            zeta,
            progress=progress,
            **rows_of,
        )
        if params["optimize"]:
            kept = list(rows)  # the design matrix stays in memory while optimising
            counts = {k: sum(r.counts[k] for r in kept) for k in counts}
            result = optimize_hyperparameters(
                kept,
                optimize=params["optimize"],
                start=hyper,
                sparse_numbers=z,
                delta=delta_pts,
                l_factor=l_mm,
                backend=backend,
            )
            solver, fitted_hyper = result.solver, result.hyperparameters
            column_scale = (result.delta / delta_pts) ** 2
            delta_pts, l_mm = result.delta, result.l_factor
            n_data, sum_log = result.n_data, result.sum_log_sigma
            noise = noise.with_defaults(**{k: fitted_hyper[k] for k in noise.defaults})
            if n_folds:  # the folds again at the fitted values (no kernel work)
                cv = FoldedRows(solver, folds, keep)
                start = dict(hyper)
                cv.fold(
                    kept,
                    backend,
                    dict.fromkeys(counts, 0),
                    column_scale=column_scale,
                    sigma_of=lambda r: rescale_noise(r.sigma, r.kind, start, fitted_hyper),
                )
            hyper = fitted_hyper
        elif n_folds:
            n_data, sum_log = cv.fold(rows, backend, counts)
            cv.merge_into(solver)
        else:
            n_data, sum_log = fold_structures(solver, rows, backend, counts)
    scales, calibration = unit_scales(), {"method": "none"}
    if n_folds:
        species_z = np.unique(z)
        scales, calibration = cross_validated_scales(
            solver,
            cv.parts,
            cv.held,
            l_factor=l_mm,
            variance=params["variance"],
            delta_species=[hyper["delta"][chemical_symbols[int(x)]] for x in species_z],
            backend=backend,
            column_scale=column_scale,
        )
    lml = log_marginal_likelihood(solver, l_mm, n_data=n_data, sum_log_sigma=sum_log)
    return FittedGAP(
        descriptor=descriptor,
        species=descriptor.species_symbols,
        zeta=int(zeta),
        e0=e0,
        sparse_features=q,
        sparse_numbers=z,
        delta=delta_pts,
        coefficients=to_numpy(solver.solve()),
        r_factor=to_numpy(solver.r),
        qtb=to_numpy(solver.qtb),
        residual=solver.residual,
        sparse_cholesky=l_mm,
        jitter=float(params["jitter"]),
        noise=noise,
        hyperparameters=hyper,
        log_marginal_likelihood=lml,
        n_observations=counts,
        n_data=n_data,
        sum_log_sigma=sum_log,
        variance=params["variance"],
        std_scale=scales,
        calibration=calibration,
        baseline=params["baseline"],
        random_state=params["random_state"],
    )


def _fold_on_dask(client, cv: FoldedRows, structures, kernel, rows_of: dict):
    """Every fold's rows into its factor on Dask workers; the held-out rows again here
    (workers return R factors, not rows). Returns the counts, rows and ``sum log sigma``."""
    from .distributed import fold_rows_on_dask

    frames, labels, noise, e0 = structures
    descriptor, q, z, delta_pts, zeta, l_mm = kernel
    counts, n_data, sum_log = {"energy": 0, "forces": 0, "virial": 0}, 0, 0.0
    for f, part in enumerate(cv.parts):
        idx = np.flatnonzero(cv.folds == f)
        c, n, s = fold_rows_on_dask(
            client, part, [frames[i] for i in idx], [labels[i] for i in idx], noise, e0,
            descriptor, q, z, delta_pts, zeta, l_mm,
        )  # fmt: skip
        counts = {k: counts[k] + c[k] for k in counts}
        n_data, sum_log = n_data + n, sum_log + s
    idx = np.flatnonzero(cv.keep)
    if len(idx):
        again = compute_rows(
            descriptor, [frames[i] for i in idx], [labels[i] for i in idx], noise, e0, q, z,
            delta_pts, zeta, **{**rows_of, "prior": rows_of["prior"][idx]},
        )  # fmt: skip
        cv.held = [HeldOut(int(cv.folds[i]), r) for i, r in zip(idx, again, strict=True)]
    return counts, n_data, sum_log


def _n_rows(atoms, labels: Labels) -> int:
    """Design-matrix rows of a labelled structure."""
    return (
        (labels.energy is not None)
        + 3 * len(atoms) * (labels.forces is not None)
        + 6 * (labels.stress is not None)
    )


def _per_species(value, species: Sequence[str], name: str) -> dict:
    if isinstance(value, dict):
        missing = [s for s in species if s not in value]
        if missing:
            raise InvalidParameterError(
                f"GAPRegressor: {name!r} has no value for {', '.join(missing)}."
            )
        return {s: value[s] for s in species}
    return dict.fromkeys(species, value)


def _pick(results: list[dict], key: str, std: bool, kind, missing=None):
    """``key`` (and ``key_std``) of every structure's results, as ``kind``."""
    values = kind([r.get(key, missing) for r in results])
    return (values, kind([r.get(f"{key}_std", missing) for r in results])) if std else values


def _features_of(atoms, descriptor):
    return descriptor.features(atoms)


def _descriptor_stream(frames, descriptor, n_jobs, client):
    """Descriptors of every structure, in order (joblib or Dask workers)."""
    if client is not None:
        from .distributed import map_ordered

        return map_ordered(client, _features_of, frames, descriptor)
    n_jobs = 1 if len(frames) <= 1 else (n_jobs or 1)
    return Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(descriptor.features)(a) for a in frames
    )
