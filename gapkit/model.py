"""The fitted model: one immutable object holding everything a prediction needs.

``GAPRegressor.fit`` (and ``partial_fit``, every
:class:`~gapkit.active.IncrementalGAP` update, ``calibrate`` and ``load``)
ends by building a :class:`FittedGAP`. Predictions, the ASE calculator, Dask
workers and model files read only this object, never the estimator's
constructor parameters, so ``set_params`` after ``fit`` cannot change a
prediction (scikit-learn's rule: fitted state is apart from parameters).

An update never changes a ``FittedGAP`` in place: it builds a new one
(:meth:`FittedGAP.replace`), which gets a new :attr:`~FittedGAP.version`, so a
calculator holding the estimator notices the change and drops its cached
results.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ._params import MAX_DELTA
from ._validation import Labels, is_bulk
from .backend import resolve_device, to_numpy
from .calibration import check_scales, unit_scales
from .descriptors import SOAP
from .exceptions import GapkitError, InvalidParameterError, ModelFileError, UnknownSpeciesError
from .gp import StreamingQR
from .gp import log_marginal_likelihood as _lml
from .rows import NoiseModel, compute_rows, fold_structures

__all__ = [
    "FittedGAP",
    "MODEL_ARRAYS",
    "baseline_results",
    "subtract_baseline",
    "copy_baseline",
    "delta_per_point",
]


def _plain(value):
    """A JSON value of nested dicts, lists and NumPy scalars."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _new_version() -> str:
    """A version unique across processes (a pickled model keeps its own)."""
    return uuid.uuid4().hex


#: Arrays of a model file and their number of dimensions.
MODEL_ARRAYS = {
    "sparse_features": 2,
    "sparse_numbers": 1,
    "delta": 1,
    "coefficients": 1,
    "r_factor": 2,
    "qtb": 1,
    "sparse_cholesky": 2,
}


def _frozen(a, dtype) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class FittedGAP:
    """A fitted SOAP-GAP potential (immutable).

    Attributes
    ----------
    descriptor : SOAP
        Descriptor settings with the species fixed.
    species : tuple of str
        Species of the descriptor, ordered by atomic number.
    trained_species : tuple of str
        Species with sparse points (seen in the training data); a structure
        with any other species cannot be predicted.
    zeta : int
    e0 : dict of str to float
        Energy per isolated atom (eV).
    sparse_features, sparse_numbers, delta, coefficients : ndarray
        Sparse points (ordered by species), their species, energy scale per
        point (eV) and the GP weights.
    r_factor, qtb : ndarray
        R factor of the weighted design matrix and ``Q^T b`` (posterior
        precision ``R^T R``, updates by QR).
    residual : float
        ``|b - A alpha|^2`` of the fit.
    sparse_cholesky : ndarray of shape (M, M)
        Lower Cholesky factor of ``K_MM + jitter`` at ``delta``.
    jitter : float
        Relative jitter the factor was computed with.
    noise : NoiseModel
        Noise the weights were fitted with (the fitted sigmas).
    hyperparameters : dict
        ``delta`` per species and the three default sigmas.
    log_marginal_likelihood : float
    n_observations : dict
        Energy, force and virial observations.
    n_data, sum_log_sigma : int, float
        Number of data rows and ``sum log sigma`` (for the likelihood after updates).
    variance : {"dtc", "sor"}
    std_scale : dict
        Factor on the predicted standard deviations per kind: ``energy``
        (total and local energies), ``forces`` and ``stress`` (one number
        gives all three the same). Fitted by cross-validation in ``fit``
        (:mod:`gapkit.calibration`) or on a validation set by ``calibrate``.
    calibration : dict
        How ``std_scale`` was obtained: ``method`` ("cross-validation",
        "validation" or "none"), and for cross-validation ``n_folds``,
        ``n_held_out`` (observations per kind) and ``borrowed`` (kinds
        without labels and the kind whose scale they took).
    baseline : calculator or None
        Fitted baseline, subtracted from the labels and added to predictions.
    random_state : int or None
        Seed of the sparse-point selection.
    version : str
        Unique for every fitted model (a random UUID): a calculator compares it
        to know whether its cached results are still the model's.
    """

    descriptor: SOAP
    species: tuple
    zeta: int
    e0: Mapping
    sparse_features: np.ndarray
    sparse_numbers: np.ndarray
    delta: np.ndarray
    coefficients: np.ndarray
    r_factor: np.ndarray
    qtb: np.ndarray
    residual: float
    sparse_cholesky: np.ndarray
    jitter: float
    noise: NoiseModel
    hyperparameters: Mapping
    log_marginal_likelihood: float
    n_observations: Mapping
    n_data: int
    sum_log_sigma: float
    variance: str = "dtc"
    std_scale: Mapping = field(default_factory=unit_scales)
    calibration: Mapping = field(default_factory=lambda: {"method": "none"})
    baseline: object = None
    random_state: int | None = None
    version: str = field(default_factory=_new_version)

    def __post_init__(self):
        put = object.__setattr__
        for name in (
            "sparse_features",
            "delta",
            "coefficients",
            "r_factor",
            "qtb",
            "sparse_cholesky",
        ):
            put(self, name, _frozen(getattr(self, name), float))
        put(self, "sparse_numbers", _frozen(self.sparse_numbers, np.int64))
        put(self, "species", tuple(self.species))
        put(self, "e0", {str(k): float(v) for k, v in self.e0.items()})
        hyper = dict(self.hyperparameters)
        hyper["delta"] = {str(k): float(v) for k, v in hyper["delta"].items()}
        put(self, "hyperparameters", hyper)
        put(self, "n_observations", {k: int(v) for k, v in self.n_observations.items()})
        try:
            put(self, "std_scale", check_scales(self.std_scale, "FittedGAP"))
        except InvalidParameterError as err:
            raise ValueError(str(err)) from None
        put(self, "calibration", _plain(dict(self.calibration)))
        m = len(self.sparse_numbers)
        if (
            self.sparse_features.shape[0] != m
            or self.delta.shape != (m,)
            or self.coefficients.shape != (m,)
            or self.r_factor.shape != (m, m)
            or self.qtb.shape != (m,)
            or self.sparse_cholesky.shape != (m, m)
        ):
            raise ValueError("FittedGAP: the arrays' shapes do not agree with each other")

    # ------------------------------------------------------------ derived
    @property
    def trained_species(self) -> tuple:
        """Species with at least one sparse point."""
        present = set(self.sparse_numbers.tolist())
        return tuple(s for s in self.species if atomic_numbers[s] in present)

    @property
    def n_sparse(self) -> int:
        return len(self.sparse_numbers)

    def replace(self, **changes) -> FittedGAP:
        """A new fitted model with some fields changed (and a new version)."""
        return replace(self, version=_new_version(), **changes)

    # ------------------------------------------------------------- checks
    def check_species(self, frames: Sequence[Atoms], owner: str) -> None:
        """Refuse structures with species the model has no training environments for.

        Raises
        ------
        UnknownSpeciesError
            Names the structure index, the species and why: not in the
            descriptor, or in it but absent from the training data (a local
            energy of such an atom would be 0 with no warning).
        """
        known = set(self.trained_species)
        listed = set(self.species)
        for k, atoms in enumerate(frames):
            unknown = sorted(
                set(atoms.get_chemical_symbols()) - known, key=lambda s: atomic_numbers[s]
            )
            if not unknown:
                continue
            untrained = [s for s in unknown if s in listed]
            why = (
                f"; {', '.join(untrained)} is in the descriptor's species but had no "
                "training environments"
                if untrained
                else ""
            )
            raise UnknownSpeciesError(
                f"{owner}: structure {k} contains {', '.join(unknown)}, which the model was "
                f"not fitted for (trained species: {', '.join(self.trained_species)}){why}."
            )

    # ------------------------------------------------------------ predict
    def predict(
        self,
        frames: Sequence[Atoms],
        *,
        forces: bool,
        stress: bool,
        std: bool = False,
        backend=None,
        n_jobs: int = 1,
        scheduler=None,
        progress=None,
    ) -> list[dict]:
        """Energies (and forces, stress, standard deviations) of checked structures.

        See :func:`gapkit.prediction.predict_frames`; the baseline is added.
        """
        from .prediction import predict_frames

        results = predict_frames(
            self,
            frames,
            forces=forces,
            stress=stress,
            std=std,
            backend=backend,
            n_jobs=n_jobs,
            scheduler=scheduler,
            progress=progress,
        )
        if self.baseline is not None:
            base = baseline_results(self.baseline, frames, forces=forces, stress=stress)
            for res, b in zip(results, base, strict=True):
                for key, value in b.items():
                    if key in res:
                        res[key] = res[key] + value
        return results

    # ------------------------------------------------------------ updates
    def rows(
        self,
        frames: Sequence[Atoms],
        labels: Sequence[Labels],
        *,
        backend=None,
        n_jobs: int | None = 1,
        progress=None,
    ):
        """Design-matrix rows of labelled structures at this model's sparse points,
        noise model and ``e0`` (a generator of :class:`~gapkit.rows.StructureRows`)."""
        backend = resolve_device("cpu") if backend is None else backend
        return compute_rows(
            self.descriptor,
            frames,
            labels,
            self.noise,
            self.e0,
            self.sparse_features,
            self.sparse_numbers,
            self.delta,
            self.zeta,
            backend=backend,
            n_jobs=n_jobs,
            progress=progress,
        )

    def with_rows(self, rows, *, backend=None) -> FittedGAP:
        """A new model with more observations folded into the R factor (no refit).

        The sparse points, ``e0``, hyperparameters and noise model stay; the
        weights, the factors, the observation counts and the log marginal
        likelihood are updated. Rows are folded one structure at a time.
        """
        backend = resolve_device("cpu") if backend is None else backend
        solver = StreamingQR.from_factors(
            backend.asarray(self.r_factor), backend.asarray(self.qtb), self.residual
        )
        counts = dict(self.n_observations)
        n_new, log_new = fold_structures(solver, rows, backend, counts, rows_per_block=1)
        n_data, sum_log = self.n_data + n_new, self.sum_log_sigma + log_new
        return self.with_solution(solver, counts, n_data, sum_log, backend=backend)

    def with_solution(
        self,
        solver: StreamingQR,
        n_observations: Mapping,
        n_data: int,
        sum_log_sigma: float,
        *,
        log_marginal_likelihood: float | None = None,
        backend=None,
        **changes,
    ) -> FittedGAP:
        """A new model with the weights and factors of ``solver`` (and ``changes``).

        The log marginal likelihood is computed from the solver and the
        (possibly changed) ``sparse_cholesky`` unless given.
        """
        backend = resolve_device("cpu") if backend is None else backend
        if log_marginal_likelihood is None:
            l_factor = changes.get("sparse_cholesky", self.sparse_cholesky)
            log_marginal_likelihood = _lml(
                solver, backend.asarray(l_factor), n_data=n_data, sum_log_sigma=sum_log_sigma
            )
        return self.replace(
            coefficients=to_numpy(solver.solve()),
            r_factor=to_numpy(solver.r),
            qtb=to_numpy(solver.qtb),
            residual=solver.residual,
            n_observations=n_observations,
            n_data=n_data,
            sum_log_sigma=sum_log_sigma,
            log_marginal_likelihood=log_marginal_likelihood,
            **changes,
        )

    # -------------------------------------------------------------- files
    def to_file_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The JSON state and the arrays of a model file.

        Raises
        ------
        InvalidParameterError
            The baseline is not one of gapkit's calculators (which can be
            stored as their parameters); another ASE calculator cannot be
            saved without pickle.
        """
        baseline = None
        if self.baseline is not None:
            baseline = _baseline_dict(self.baseline)
            if baseline is None:
                raise InvalidParameterError(
                    f"GAPRegressor.save: the baseline {type(self.baseline).__name__} cannot be "
                    "stored in a model file (only gapkit's Ewald, PME and Coulomb can, as "
                    "their parameters; model files never use pickle). Keep the model in "
                    "memory, or fit with a gapkit electrostatics baseline."
                )
        state = {
            "descriptor": self.descriptor.get_params(),
            "species": list(self.species),
            "zeta": int(self.zeta),
            "e0": dict(self.e0),
            "residual": float(self.residual),
            "jitter": float(self.jitter),
            "noise": {**self.noise.defaults, "config_type_sigma": self.noise.config_type_sigma},
            "hyperparameters": self.hyperparameters,
            "log_marginal_likelihood": float(self.log_marginal_likelihood),
            "n_observations": dict(self.n_observations),
            "n_data": int(self.n_data),
            "sum_log_sigma": float(self.sum_log_sigma),
            "variance": self.variance,
            "std_scale": dict(self.std_scale),
            "calibration": dict(self.calibration),
            "baseline": baseline,
            "random_state": self.random_state,
        }
        arrays = {name: getattr(self, name) for name in MODEL_ARRAYS}
        return state, arrays

    @classmethod
    def from_file_state(
        cls, state: Mapping, arrays: Mapping[str, np.ndarray], path: str
    ) -> FittedGAP:
        """Rebuild a model from :meth:`to_file_state`'s output, checking every field.

        Raises
        ------
        ModelFileError
            A missing or invalid field, arrays that disagree with each other
            or with the descriptor; the message names the file and the field.
        """

        def bad(what: str) -> ModelFileError:
            return ModelFileError(f"{path}: {what} (damaged or not written by gapkit).")

        missing = [
            k
            for k in (
                "descriptor",
                "species",
                "zeta",
                "e0",
                "residual",
                "jitter",
                "noise",
                "hyperparameters",
                "log_marginal_likelihood",
                "n_observations",
                "n_data",
                "sum_log_sigma",
                "variance",
                "std_scale",
                "baseline",
                "random_state",
            )
            if k not in state
        ]
        if missing:
            raise bad(f"the model state has no {', '.join(repr(k) for k in missing)}")
        try:
            descriptor = SOAP(**state["descriptor"])
            descriptor.n_features  # noqa: B018 - validates the settings
        except (TypeError, ValueError) as err:
            raise bad(f"invalid descriptor settings ({err})") from err
        species = state["species"]
        if (
            not isinstance(species, list)
            or not species
            or not all(isinstance(s, str) and s in atomic_numbers for s in species)
            or [atomic_numbers[s] for s in species] != list(descriptor.species_numbers)
        ):
            raise bad(f"invalid species {species!r}")
        e0 = state["e0"]
        if (
            not isinstance(e0, dict)
            or set(e0) != set(species)
            or not all(_finite(v) for v in e0.values())
        ):
            raise bad(f"'e0' must give a finite energy per species; got {e0!r}")
        zeta = state["zeta"]
        if isinstance(zeta, bool) or not isinstance(zeta, int) or not 1 <= zeta <= 64:
            raise bad(f"'zeta' must be an integer between 1 and 64; got {zeta!r}")
        if state["variance"] not in ("dtc", "sor"):
            raise bad(f"'variance' must be 'dtc' or 'sor'; got {state['variance']!r}")
        for key in ("residual", "log_marginal_likelihood", "sum_log_sigma"):
            if not _finite(state[key]):
                raise bad(f"{key!r} must be a finite number; got {state[key]!r}")
        try:  # one number in files written before scales per kind
            std_scale = check_scales(state["std_scale"], "std_scale")
        except InvalidParameterError as err:
            raise bad(str(err).split(": ", 1)[-1]) from None
        calibration = state.get("calibration", {"method": "unknown"})
        if (
            not isinstance(calibration, dict)
            or not isinstance(calibration.get("method"), str)
            or len(json.dumps(calibration)) > 4096
        ):
            raise bad(f"'calibration' must be a small table with a 'method'; got {calibration!r}")
        if not _finite(state["jitter"]) or not 0 <= state["jitter"] < 1:
            raise bad(f"'jitter' must be a number in [0, 1); got {state['jitter']!r}")
        for key in ("n_data",):
            if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
                raise bad(f"{key!r} must be an integer >= 0; got {state[key]!r}")
        seed = state["random_state"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise bad(f"'random_state' must be an integer >= 0 or null; got {seed!r}")
        hyper = state["hyperparameters"]
        sigmas = ("sigma_energy", "sigma_force", "sigma_virial")
        if (
            not isinstance(hyper, dict)
            or not isinstance(hyper.get("delta"), dict)
            or set(hyper["delta"]) != set(species)
            or not all(_finite(v) and v > 0 for v in hyper["delta"].values())
            or not all(_finite(hyper.get(k)) and hyper[k] > 0 for k in sigmas)
        ):
            raise bad(
                "'hyperparameters' must hold a positive 'delta' per species and the "
                f"three sigmas; got {hyper!r}"
            )
        try:
            noise = NoiseModel(**state["noise"])
        except (TypeError, InvalidParameterError) as err:
            raise bad(f"invalid noise model ({err})") from err
        baseline = state["baseline"]
        if baseline is not None:
            from .electrostatics import calculator_from_dict

            try:
                baseline = calculator_from_dict(baseline)
            except (TypeError, ValueError) as err:
                raise bad(f"invalid baseline ({err})") from err
        a = {k: np.asarray(arrays[k]) for k in MODEL_ARRAYS}
        m = len(a["coefficients"])
        if a["sparse_features"].shape != (m, descriptor.n_features):
            raise bad(
                f"sparse features of shape {a['sparse_features'].shape} do not match "
                f"{m} weights and the descriptor's {descriptor.n_features} features"
            )
        z = a["sparse_numbers"]
        if (
            z.shape != (m,)
            or not np.issubdtype(z.dtype, np.integer)
            or not set(z.tolist()) <= set(descriptor.species_numbers.tolist())
        ):
            raise bad("the sparse points' species do not match the descriptor")
        if np.any(np.diff(z) < 0):
            raise bad("the sparse points are not ordered by species")
        for name in MODEL_ARRAYS:
            if name != "sparse_numbers" and not np.all(np.isfinite(a[name])):
                raise bad(f"array {name!r} holds NaN or infinite values")
        if a["delta"].shape == (m,) and not np.array_equal(
            a["delta"], delta_per_point(hyper["delta"], z)
        ):
            raise bad("array 'delta' does not match hyperparameters['delta']")
        if np.any(a["delta"] > MAX_DELTA) or any(v > MAX_DELTA for v in hyper["delta"].values()):
            raise bad(f"'delta' above {MAX_DELTA:g} eV")
        norms = np.linalg.norm(a["sparse_features"], axis=1) if m else np.ones(0)
        if not np.allclose(norms, 1.0, rtol=0, atol=1e-6):
            raise bad("the sparse features are not unit vectors (normalised descriptors)")
        for name, lower in (("r_factor", False), ("sparse_cholesky", True)):
            x = a[name]
            if x.shape == (m, m):
                off = np.tril(x, -1) if not lower else np.triu(x, 1)
                diag = np.abs(np.diag(x))
                if np.any(off != 0) or np.any(diag <= 0):
                    kind = "lower" if lower else "upper"
                    raise bad(f"array {name!r} is not {kind} triangular with a non-zero diagonal")
        try:
            return cls(
                descriptor=descriptor,
                species=tuple(species),
                zeta=zeta,
                e0=e0,
                sparse_features=a["sparse_features"],
                sparse_numbers=z,
                delta=a["delta"],
                coefficients=a["coefficients"],
                r_factor=a["r_factor"],
                qtb=a["qtb"],
                residual=float(state["residual"]),
                sparse_cholesky=a["sparse_cholesky"],
                jitter=float(state["jitter"]),
                noise=noise,
                hyperparameters=hyper,
                log_marginal_likelihood=float(state["log_marginal_likelihood"]),
                n_observations=dict(state["n_observations"]),
                n_data=int(state["n_data"]),
                sum_log_sigma=float(state["sum_log_sigma"]),
                variance=state["variance"],
                std_scale=std_scale,
                calibration=calibration,
                baseline=baseline,
                random_state=state["random_state"],
            )
        except (TypeError, ValueError, KeyError) as err:
            raise bad(f"inconsistent model state ({err})") from err


def baseline_results(
    baseline, frames: Sequence[Atoms], *, forces: bool, stress: bool
) -> list[dict]:
    """Energy, per-atom energies (when the calculator has them), forces and (bulk
    cells) stress of a baseline calculator for each structure."""
    out = []
    for k, atoms in enumerate(frames):
        a = atoms.copy()
        a.calc = baseline
        try:
            res = {"energy": a.get_potential_energy()}
            if "energies" in getattr(baseline, "implemented_properties", ()):
                res["energies"] = a.get_potential_energies()
            if forces:
                res["forces"] = a.get_forces()
            if stress and is_bulk(a):
                res["stress"] = a.get_stress()
        except GapkitError as err:  # say which structure the baseline failed on
            raise type(err)(f"baseline of structure {k}: {err}") from err
        out.append(res)
    return out


def subtract_baseline(labels: Sequence[Labels], frames: Sequence[Atoms], baseline) -> list[Labels]:
    """Labels less the baseline's energy, forces and stress (as given without one)."""
    if baseline is None:
        return list(labels)
    base = baseline_results(baseline, frames, forces=True, stress=True)
    return [
        Labels(
            None if lab.energy is None else lab.energy - b["energy"],
            None if lab.forces is None else lab.forces - b["forces"],
            None if lab.stress is None or "stress" not in b else lab.stress - b["stress"],
        )
        for lab, b in zip(labels, base, strict=True)
    ]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _baseline_dict(baseline) -> dict | None:
    """Parameters of a gapkit electrostatics calculator, None for any other."""
    from .electrostatics import calculator_from_dict

    todict = getattr(baseline, "todict", None)
    if todict is None:
        return None
    try:
        d = todict()
        calculator_from_dict(d)
    except Exception:  # noqa: BLE001 - not one of gapkit's calculators
        return None
    return d


def copy_baseline(baseline):
    """The baseline a fit keeps: a fresh copy of a gapkit calculator (from its
    parameters), or any other ASE calculator as given.

    Raises
    ------
    InvalidParameterError
        ``baseline`` is not an ASE calculator (has no ``get_potential_energy``
        or ``calculate``).
    """
    if not (hasattr(baseline, "calculate") or hasattr(baseline, "get_potential_energy")):
        raise InvalidParameterError(
            "GAPRegressor: 'baseline' must be an ASE calculator (e.g. "
            f"gapkit.electrostatics.Ewald); got {type(baseline).__name__}."
        )
    d = _baseline_dict(baseline)
    if d is None:
        return baseline
    from .electrostatics import calculator_from_dict

    return calculator_from_dict(d)


def delta_per_point(delta: Mapping[str, float], sparse_numbers: np.ndarray) -> np.ndarray:
    """Energy scale of each sparse point from a per-species dict."""
    return np.array([delta[chemical_symbols[int(z)]] for z in sparse_numbers], float)
