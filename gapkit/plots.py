"""Figures (matplotlib, an optional extra: ``pip install "gapkit[plots]"``)."""

from __future__ import annotations

import numpy as np

__all__ = ["parity_plot", "calibration_plot"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('Plots need matplotlib: pip install "gapkit[plots]".') from err
    return plt


def parity_plot(frames, labels, predictions, path) -> None:
    """Save a two-panel parity plot (energy per atom, force components) as PNG.

    Parameters
    ----------
    frames : list of ase.Atoms
    labels : list of gapkit._validation.Labels
        Reference values.
    predictions : list of dict
        Model output with ``energy`` and ``forces`` per structure.
    path : str or path-like
        Output file.
    """
    plt = _pyplot()
    ref_e, pred_e, ref_f, pred_f = [], [], [], []
    for atoms, lab, pred in zip(frames, labels, predictions, strict=True):
        if lab.energy is not None:
            ref_e.append(lab.energy / len(atoms))
            pred_e.append(pred["energy"] / len(atoms))
        if lab.forces is not None:
            ref_f.append(lab.forces.ravel())
            pred_f.append(pred["forces"].ravel())
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    panels = (
        (axes[0], np.array(ref_e), np.array(pred_e), "energy (eV/atom)"),
        (
            axes[1],
            np.concatenate(ref_f) if ref_f else np.zeros(0),
            np.concatenate(pred_f) if pred_f else np.zeros(0),
            "force component (eV/Å)",
        ),
    )
    for ax, ref, pred, name in panels:
        if ref.size:
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
            ax.scatter(ref, pred, s=6, alpha=0.6)
            rmse = float(np.sqrt(np.mean((pred - ref) ** 2)))
            ax.set_title(f"RMSE {rmse:.4g}")
        ax.set_xlabel(f"reference {name}")
        ax.set_ylabel(f"gapkit {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _binned_rms(errors: np.ndarray, stds: np.ndarray, n_bins: int):
    """RMS std and RMS error in ``n_bins`` equal-count bins of increasing std
    (quantile bins; ties are split so that every bin holds the same number of
    values, to within one)."""
    order = np.argsort(stds, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, stds.size)) if g.size]
    rms_std = np.array([np.sqrt(np.mean(stds[g] ** 2)) for g in groups])
    rms_err = np.array([np.sqrt(np.mean(errors[g] ** 2)) for g in groups])
    return rms_std, rms_err


def calibration_plot(
    errors,
    stds,
    path,
    label: str = "force component (eV/Å)",
    *,
    n_bins: int = 10,
    hexbin_above: int = 5000,
) -> None:
    """Save a two-panel calibration figure (PNG).

    Left, the reliability diagram: observed against expected coverage of
    central Gaussian intervals (:func:`gapkit.metrics.reliability_curve`),
    the diagonal of calibrated stds, and the area between them shaded (the
    miscalibration area, in the legend). Right, ``|error|`` against the
    predicted std on log-log axes, with the RMS error against the RMS std in
    ``n_bins`` quantile bins of the std and the line ``y = x`` on which the
    binned points of calibrated stds lie.

    Parameters
    ----------
    errors : array-like
        Prediction minus reference (any shape).
    stds : array-like
        Predicted standard deviations, same number of values.
    path : str or path-like
        Output file.
    label : str, default="force component (eV/Å)"
        What the values are, with their unit (axis labels).
    n_bins : int, default=10
        Number of quantile bins of the std.
    hexbin_above : int, default=5000
        Draw a hexagonal-bin density instead of single points above this many
        values.

    Raises
    ------
    ImportError
        Without matplotlib (``pip install "gapkit[plots]"``).
    ValueError
        For empty input or inputs of different sizes.
    """
    from .metrics import calibration_metrics, reliability_curve

    e = np.abs(np.ravel(np.asarray(errors, dtype=float)))
    s = np.ravel(np.asarray(stds, dtype=float))
    if e.size == 0:
        raise ValueError("calibration_plot: no errors to plot.")
    expected, observed = reliability_curve(e, s)
    metrics = calibration_metrics(e, s)
    plt = _pyplot()
    fig, (ax_rel, ax_err) = plt.subplots(1, 2, figsize=(10, 4.5))

    ax_rel.fill_between(
        expected,
        expected,
        observed,
        color="C0",
        alpha=0.25,
        lw=0,
        label=f"miscalibration area {metrics['miscalibration_area']:.3f}",
    )
    ax_rel.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="calibrated")
    ax_rel.plot(expected, observed, color="C0", lw=1.8, label="gapkit")
    ax_rel.set(
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
        xlabel="expected coverage of the central interval",
        ylabel="observed coverage",
        title=f"reliability, {label}",
    )
    ax_rel.legend(loc="upper left", fontsize="small")

    shown = (e > 0) & (s > 0)
    if np.count_nonzero(shown) > hexbin_above:
        ax_err.hexbin(
            s[shown],
            e[shown],
            xscale="log",
            yscale="log",
            gridsize=45,
            bins="log",
            mincnt=1,
            cmap="Blues",
        )
    else:
        ax_err.scatter(s[shown], e[shown], s=4, alpha=0.35, color="C0", lw=0, label="|error|")
    ax_err.set_xscale("log")
    ax_err.set_yscale("log")
    if np.any(shown):  # the diagonal over the stds and all but the smallest 1% of errors
        lo = float(min(s[shown].min(), np.quantile(e[shown], 0.01)))
        hi = float(max(s[shown].max(), e[shown].max()))
        ax_err.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="y = x")
    rms_std, rms_err = _binned_rms(e, s, n_bins)
    keep = (rms_std > 0) & (rms_err > 0)
    ax_err.plot(
        rms_std[keep],
        rms_err[keep],
        "o-",
        color="C3",
        ms=5,
        label=f"RMS error vs RMS std, {len(rms_std)} quantile bins",
    )
    ax_err.set(
        xlabel=f"predicted std, {label}",
        ylabel=f"|error|, {label}",
        title=f"Spearman {metrics['spearman']:.3f}, mean z² {metrics['mean_z2']:.3g}",
    )
    ax_err.legend(loc="best", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
