"""Hyperparameters by maximum marginal likelihood, as a pure function of cached rows.

The rows ``K_NM`` are computed once at reference values ``delta0`` and
``sigma0``. A trial ``delta`` scales the columns by ``(delta / delta0)^2`` and
``L`` (the Cholesky factor of ``K_MM + jitter``) by ``delta / delta0``; trial
default sigmas rescale the rows of their kind. Every trial is then one QR of
the cached rows: no descriptor or kernel work. The search runs in log space
with bounds (an unbounded search drives noise hyperparameters to zero or to
1e12 in peer codes).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize
from ase.data import chemical_symbols
from sklearn.exceptions import ConvergenceWarning

from .backend import Backend
from .gp import StreamingQR, log_marginal_likelihood
from .rows import SIGMA_OF_KIND, StructureRows

__all__ = ["OPTIMIZABLE", "HyperparameterFit", "optimizable_names", "optimize_hyperparameters"]

#: What ``optimize=`` may name.
OPTIMIZABLE = ("delta", "sigma_energy", "sigma_force", "sigma_virial")
_KIND_OF = {v: k for k, v in SIGMA_OF_KIND.items()}
#: Bounds in log space: sigmas in [1e-6, 1e2], deltas in [1e-4, 1e4].
SIGMA_BOUNDS = (1e-6, 1e2)
DELTA_BOUNDS = (1e-4, 1e4)


@dataclass(frozen=True)
class HyperparameterFit:
    """Result of :func:`optimize_hyperparameters`."""

    hyperparameters: dict  # "delta" per species and the three default sigmas
    delta: np.ndarray  # (M,) per sparse point
    l_factor: np.ndarray  # (M, M) Cholesky factor at the fitted delta
    solver: StreamingQR  # QR of all rows at the fitted values
    log_marginal_likelihood: float
    converged: bool
    n_data: int
    sum_log_sigma: float


def optimizable_names(optimize, species: Sequence[str], kind: np.ndarray) -> list[str]:
    """Names of the free log-parameters: ``delta_<symbol>`` and sigmas present in the data."""
    wanted = list(OPTIMIZABLE) if optimize is True else list(optimize)
    names = []
    for w in wanted:
        if w == "delta":
            names += [f"delta_{s}" for s in species]
        elif np.any(kind == _KIND_OF[w]):
            names.append(w)
    return names


def optimize_hyperparameters(
    structures: Sequence[StructureRows],
    *,
    optimize,
    start: Mapping,
    sparse_numbers: np.ndarray,
    delta: np.ndarray,
    l_factor: np.ndarray,
    backend: Backend,
    initial: Mapping | None = None,
) -> HyperparameterFit:
    """Maximise the log marginal likelihood over log delta (per species) and log sigmas.

    Parameters
    ----------
    structures : list of StructureRows
        Rows of every structure: unwhitened ``K_NM`` at ``delta``
        (``backend``'s namespace), labels, noise at ``start``'s sigmas and
        row kinds (``gapkit.rows.KIND_*``).
    optimize : True or list of str
        Which hyperparameters are free (from :data:`OPTIMIZABLE`).
    start : mapping
        ``delta`` (dict per species) and the three default sigmas the rows
        were computed at.
    initial : mapping, optional
        Where the search starts, in the same form (``start`` when None).
    sparse_numbers : ndarray of shape (M,)
    delta : ndarray of shape (M,)
        Energy scale per sparse point at ``start``.
    l_factor : ndarray of shape (M, M)
        Cholesky factor of ``K_MM + jitter`` at ``delta`` (host array).
    backend : Backend

    Returns
    -------
    HyperparameterFit

    Warns
    -----
    ConvergenceWarning
        When neither L-BFGS-B nor the Powell polish converged (the best
        values found are used).
    """
    rows = backend.xp.concat([r.rows for r in structures], axis=0)
    targets, sigma, kind = (
        np.concatenate([getattr(r, k) for r in structures]) for k in ("targets", "sigma", "kind")
    )
    species = list(start["delta"])
    names = optimizable_names(optimize, species, kind)
    x_start = {
        **{k: float(start[k]) for k in SIGMA_OF_KIND.values()},
        **{f"delta_{s}": float(start["delta"][s]) for s in species},
    }
    first = (
        x_start
        if initial is None
        else {
            **{k: float(initial[k]) for k in SIGMA_OF_KIND.values()},
            **{f"delta_{s}": float(initial["delta"][s]) for s in species},
        }
    )
    x0 = np.log([first[n] for n in names])
    l0_d = backend.asarray(l_factor)

    def unpack(x):
        values = dict(x_start)
        values.update(zip(names, np.exp(x), strict=True))
        noise = sigma.copy()
        for name, k in _KIND_OF.items():
            noise[kind == k] *= values[name] / x_start[name]
        ratio = np.array([values[f"delta_{chemical_symbols[z]}"] for z in sparse_numbers]) / delta
        return values, noise, ratio

    def build(x):
        _, noise, ratio = unpack(x)
        ratio_d, noise_d = backend.asarray(ratio), backend.asarray(noise)
        solver = StreamingQR(len(sparse_numbers), prior=l0_d * ratio_d[:, None])
        solver.add_rows(
            rows * (ratio_d**2)[None, :] / noise_d[:, None], backend.asarray(targets / noise)
        )
        return solver, noise, ratio

    def objective(x):
        solver, noise, ratio = build(x)
        return -log_marginal_likelihood(solver, l_factor * ratio[:, None], noise)

    bounds = [tuple(np.log(SIGMA_BOUNDS if n.startswith("sigma") else DELTA_BOUNDS)) for n in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # central differences: the LML is a sum of large terms, so forward
        # differences with tiny steps are dominated by rounding
        result = scipy.optimize.minimize(
            objective,
            x0,
            method="L-BFGS-B",
            bounds=bounds,
            jac="3-point",
            options={"maxiter": 100, "finite_diff_rel_step": 1e-4},
        )
        converged = bool(result.success)
        if not converged:
            # L-BFGS stops ("ABNORMAL") when finite-difference gradients get noisy
            # near the optimum; a derivative-free polish from there settles it.
            polish = scipy.optimize.minimize(
                objective,
                result.x,
                method="Powell",
                bounds=bounds,
                options={"xtol": 1e-3, "ftol": 1e-9, "maxfev": 400},
            )
            converged = bool(polish.success)
            if polish.fun <= result.fun:
                result = polish
    if not converged:
        warnings.warn(
            f"hyperparameter optimisation did not converge ({result.message}); "
            "using the best values found.",
            ConvergenceWarning,
            stacklevel=3,
        )
    values, _, _ = unpack(result.x)
    solver, noise, ratio = build(result.x)
    hyper = {
        "delta": {s: float(values[f"delta_{s}"]) for s in species},
        **{k: float(values[k]) for k in SIGMA_OF_KIND.values()},
    }
    return HyperparameterFit(
        hyperparameters=hyper,
        delta=delta * ratio,
        l_factor=l_factor * ratio[:, None],
        solver=solver,
        log_marginal_likelihood=-float(result.fun),
        converged=converged,
        n_data=len(noise),
        sum_log_sigma=float(np.sum(np.log(noise))),
    )
