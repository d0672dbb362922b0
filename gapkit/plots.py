"""Figures (matplotlib, an optional extra: ``pip install gapkit[plots]``)."""

from __future__ import annotations

import numpy as np

__all__ = ["parity_plot", "calibration_plot"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Plots need matplotlib: pip install 'gapkit[plots]'.") from err
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


def calibration_plot(errors, stds, path, label: str = "force component (eV/Å)") -> None:
    """Save a calibration plot (PNG): ``|error|`` against predicted std, and the
    observed fraction of errors within ``k std`` against the Gaussian
    expectation ``erf(k / sqrt 2)``.
    """
    from scipy.special import erf

    plt = _pyplot()
    e = np.abs(np.ravel(errors))
    s = np.ravel(stds)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    ax = axes[0]
    ax.loglog(s, e, ".", ms=2, alpha=0.4)
    lo = max(float(min(s.min(), e[e > 0].min() if np.any(e > 0) else s.min())), 1e-6)
    hi = float(max(s.max(), e.max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
    ax.set_xlabel(f"predicted std, {label}")
    ax.set_ylabel(f"|error|, {label}")
    k = np.linspace(0, 3, 61)
    observed = [np.mean(e <= kk * s) for kk in k]
    ax = axes[1]
    ax.plot(erf(k / np.sqrt(2)), observed, label="gapkit")
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, label="calibrated")
    ax.set_xlabel("expected fraction within k std")
    ax.set_ylabel("observed fraction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
