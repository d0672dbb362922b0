"""Error metrics of predictions against reference labels."""

from __future__ import annotations

import numpy as np

__all__ = ["EvaluationReport", "evaluate_predictions"]

_ROWS = (
    ("energy_rmse_per_atom", "energy RMSE", "meV/atom", 1e3),
    ("energy_mae_per_atom", "energy MAE", "meV/atom", 1e3),
    ("force_rmse", "force RMSE", "eV/Å", 1.0),
    ("force_mae", "force MAE", "eV/Å", 1.0),
    ("stress_rmse", "stress RMSE", "meV/Å³", 1e3),
)


class EvaluationReport(dict):
    """Metrics in SI-free base units (eV, Å) that print as a readable table.

    Keys: ``energy_rmse_per_atom``, ``energy_mae_per_atom`` (eV/atom),
    ``force_rmse``, ``force_mae`` (eV/Å), ``stress_rmse`` (eV/Å³), and the
    counts ``n_structures``, ``n_energies``, ``n_force_components``,
    ``n_stresses``. A metric without labels is NaN.
    """

    def __str__(self) -> str:
        lines = [f"{'quantity':<14}{'value':>12}  unit", "-" * 34]
        for key, name, unit, scale in _ROWS:
            value = self.get(key, np.nan)
            lines.append(f"{name:<14}{value * scale:>12.4f}  {unit}")
        lines.append(
            f"({self['n_structures']} structures: {self['n_energies']} energies, "
            f"{self['n_force_components']} force components, {self['n_stresses']} stresses)"
        )
        return "\n".join(lines)


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else float("nan")


def _mae(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if x.size else float("nan")


def evaluate_predictions(frames, labels, predictions) -> EvaluationReport:
    """Compare predictions (dicts of ``energy``, ``forces``, ``stress``) with labels."""
    de, df, ds = [], [], []
    for atoms, lab, pred in zip(frames, labels, predictions, strict=True):
        if lab.energy is not None:
            de.append((pred["energy"] - lab.energy) / len(atoms))
        if lab.forces is not None and "forces" in pred:
            df.append((pred["forces"] - lab.forces).ravel())
        if lab.stress is not None and "stress" in pred:
            ds.append(pred["stress"] - lab.stress)
    de = np.array(de)
    df = np.concatenate(df) if df else np.zeros(0)
    ds = np.concatenate(ds) if ds else np.zeros(0)
    return EvaluationReport(
        energy_rmse_per_atom=_rmse(de),
        energy_mae_per_atom=_mae(de),
        force_rmse=_rmse(df),
        force_mae=_mae(df),
        stress_rmse=_rmse(ds),
        n_structures=len(frames),
        n_energies=int(de.size),
        n_force_components=int(df.size),
        n_stresses=int(ds.size // 6),
    )


def calibration_metrics(errors: np.ndarray, stds: np.ndarray) -> dict[str, float]:
    """How well predicted standard deviations match actual errors.

    Parameters
    ----------
    errors : ndarray
        Prediction minus reference (any shape).
    stds : ndarray
        Predicted standard deviations, same shape.

    Returns
    -------
    dict
        ``coverage_1sigma`` and ``coverage_2sigma`` (fractions of
        ``|error| <= k std``; 0.683 and 0.954 for calibrated Gaussian errors),
        ``spearman`` (rank correlation of std and ``|error|``) and ``scale``
        (the factor ``s`` that maximises the Gaussian likelihood of the errors
        with stds ``s * std``: ``s^2 = mean((error / std)^2)``).
    """
    from scipy.stats import spearmanr

    e = np.abs(np.ravel(errors))
    s = np.ravel(stds)
    if e.size == 0:
        return dict(coverage_1sigma=np.nan, coverage_2sigma=np.nan, spearman=np.nan, scale=np.nan)
    s = np.maximum(s, np.finfo(float).tiny)
    z = e / s
    return dict(
        coverage_1sigma=float(np.mean(z <= 1.0)),
        coverage_2sigma=float(np.mean(z <= 2.0)),
        spearman=float(spearmanr(s, e)[0]) if e.size > 1 else np.nan,
        scale=float(np.sqrt(np.mean(z**2))),
    )
