"""Error metrics of predictions against reference labels."""

from __future__ import annotations

import numpy as np

__all__ = ["EvaluationReport", "calibration_metrics", "evaluate_predictions", "reliability_curve"]

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


def _z_scores(errors, stds, owner: str) -> np.ndarray:
    """``|error| / std`` of flattened inputs (stds clipped at the smallest
    positive float, so a zero std gives a huge z rather than a division error)."""
    e = np.abs(np.ravel(np.asarray(errors, dtype=float)))
    s = np.ravel(np.asarray(stds, dtype=float))
    if e.shape != s.shape:
        raise ValueError(
            f"{owner}: errors and stds must have the same number of values; "
            f"got {e.size} errors and {s.size} stds."
        )
    return e / np.maximum(s, np.finfo(float).tiny)


def reliability_curve(
    errors: np.ndarray, stds: np.ndarray, n_points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    r"""Observed against expected coverage of central Gaussian intervals.

    For an expected coverage ``p`` the central interval of a Gaussian with the
    predicted std is ``|error| <= z_p std`` with ``z_p = Phi^-1((1 + p) / 2)``;
    the observed coverage is the fraction of errors inside it. Calibrated
    Gaussian errors give ``observed = expected`` (the diagonal of a reliability
    diagram); stds that are too small put the curve below it, too large above.

    Parameters
    ----------
    errors : ndarray
        Prediction minus reference (any shape).
    stds : ndarray
        Predicted standard deviations, same number of values.
    n_points : int, default=200
        Number of expected coverages, the midpoints ``(k + 1/2) / n_points``
        of ``n_points`` equal cells of (0, 1), so that the mean of
        ``|observed - expected|`` is the midpoint rule for the area between
        the curves (see :func:`calibration_metrics`).

    Returns
    -------
    expected : ndarray of shape (n_points,)
        Expected coverages, increasing in (0, 1).
    observed : ndarray of shape (n_points,)
        Observed coverages (NaN without any errors).

    References
    ----------
    K. Tran et al., "Methods for comparing uncertainty quantifications for
    material property predictions", Mach. Learn.: Sci. Technol. 1, 025006
    (2020).
    """
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 1:
        raise ValueError(
            f"reliability_curve: n_points must be a positive integer; got {n_points!r}."
        )
    return _coverage_curve(_z_scores(errors, stds, "reliability_curve"), int(n_points))


def _coverage_curve(z: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import ndtri

    expected = (np.arange(n_points) + 0.5) / n_points
    if z.size == 0:
        return expected, np.full(n_points, np.nan)
    half_width = ndtri((1.0 + expected) / 2.0)
    observed = np.searchsorted(np.sort(z), half_width, side="right") / z.size
    return expected, observed


def calibration_metrics(errors: np.ndarray, stds: np.ndarray) -> dict[str, float]:
    r"""How well predicted standard deviations match actual errors.

    Parameters
    ----------
    errors : ndarray
        Prediction minus reference (any shape).
    stds : ndarray
        Predicted standard deviations, same number of values.

    Returns
    -------
    dict
        With ``z = |error| / std``:

        ``coverage_1sigma``, ``coverage_2sigma``
            Fractions of ``z <= 1`` and ``z <= 2``: 0.683 and 0.954 for
            calibrated Gaussian errors.
        ``mean_z2``
            ``mean(z^2)``: 1 for calibrated errors (of any distribution),
            above 1 for stds too small on average, below 1 for too large.
        ``spearman``
            Rank correlation of std and ``|error|``: does a larger std flag a
            larger error? (NaN for fewer than two values or constant input.)
        ``miscalibration_area``
            :math:`\int_0^1 |\mathrm{observed}(p) - p|\,dp` over the expected
            coverage ``p`` of central Gaussian intervals, from
            :func:`reliability_curve` (midpoint rule, 200 points): 0 for
            calibrated Gaussian errors (up to sampling noise, about
            ``0.3 / sqrt(n)``), at most 0.5.
        ``scale``
            The factor ``s`` that maximises the Gaussian likelihood of the
            errors with stds ``s * std``: ``s^2 = mean_z2``.

        All NaN for empty input.

    References
    ----------
    K. Tran et al., Mach. Learn.: Sci. Technol. 1, 025006 (2020) (the
    miscalibration area).
    """
    from scipy.stats import spearmanr

    z = _z_scores(errors, stds, "calibration_metrics")
    if z.size == 0:
        keys = ("coverage_1sigma", "coverage_2sigma", "mean_z2", "spearman")
        return dict.fromkeys((*keys, "miscalibration_area", "scale"), np.nan)
    e = np.abs(np.ravel(np.asarray(errors, dtype=float)))
    s = np.ravel(np.asarray(stds, dtype=float))
    expected, observed = _coverage_curve(z, 200)
    mean_z2 = float(np.mean(z**2))
    if e.size > 1 and np.ptp(e) > 0 and np.ptp(s) > 0:
        spearman = float(spearmanr(s, e)[0])
    else:
        spearman = np.nan
    return dict(
        coverage_1sigma=float(np.mean(z <= 1.0)),
        coverage_2sigma=float(np.mean(z <= 2.0)),
        mean_z2=mean_z2,
        spearman=spearman,
        miscalibration_area=float(np.mean(np.abs(observed - expected))),
        scale=float(np.sqrt(mean_z2)),
    )
