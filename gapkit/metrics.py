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
