"""Are gapkit's stds calibrated as they come out of ``fit``? Si GFN1-xTB train -> test.

Fits the Si training set with default settings (``GAPRegressor()``: SOAP r_cut 5,
n_max 8, l_max 6, 500 CUR sparse points, DTC variance), once without the
cross-validated scales (``cv=None``, the old behaviour) and once with the
default ``cv=5``, and scores the stds on the unseen test structures:
coverage of ``|error| <= k std`` at 1 and 2 std, mean z^2, Spearman rank
correlation of std and |error| (per force component and per atom, norms of
the three components) and the miscalibration area. Then ``calibrate`` on half
of the test set, scored on the other half. Prints a table and the fit times::

    python benchmarks/bench_calibration.py [--data-dir ../shared/data] [--n-jobs 2]
        [--optimize]

``--optimize`` adds a fit with hyperparameters by marginal likelihood
(``optimize=True``, ``cv=None``), the other way to calibrate (slow).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase.io import read
from scipy.stats import spearmanr

from gapkit import GAPRegressor
from gapkit.metrics import calibration_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
TARGETS = "targets (forces): 1σ 60-76 %, 2σ 90-98 %, mean z² 0.6-1.6, Spearman >= 0.8"


def _scores(model, frames) -> dict:
    """Errors and stds per kind on ``frames``."""
    res = model.predict_all(frames, return_std=True)
    out = {}
    f_err = [r["forces"] - a.get_forces() for r, a in zip(res, frames, strict=True)]
    f_std = [r["forces_std"] for r in res]
    out["forces"] = (np.concatenate(f_err).ravel(), np.concatenate(f_std).ravel())
    atom_err = np.concatenate([np.linalg.norm(e, axis=1) for e in f_err])
    atom_std = np.concatenate([np.linalg.norm(s, axis=1) for s in f_std])
    out["per atom"] = (atom_err, atom_std)
    e_err = np.array(
        [r["energy"] - a.get_potential_energy() for r, a in zip(res, frames, strict=True)]
    )
    out["energy"] = (e_err, np.array([r["energy_std"] for r in res]))
    out["stress"] = (
        np.concatenate([r["stress"] - a.get_stress() for r, a in zip(res, frames, strict=True)]),
        np.concatenate([r["stress_std"] for r in res]),
    )
    return out


def _rows(label: str, scores: dict) -> list[str]:
    lines = []
    for kind, (err, std) in scores.items():
        if kind == "per atom":  # norms are not Gaussian components: rank correlation only
            rho = spearmanr(std, err)[0]
            lines.append(f"{label:<26}{kind:<10}{len(err):>7}{'':>8}{'':>8}{'':>9}{rho:>9.3f}")
            continue
        m = calibration_metrics(err, std)
        lines.append(
            f"{label:<26}{kind:<10}{len(err):>7}{100 * m['coverage_1sigma']:>7.1f}%"
            f"{100 * m['coverage_2sigma']:>7.1f}%{m['mean_z2']:>9.3f}{m['spearman']:>9.3f}"
            f"{m['miscalibration_area']:>9.3f}"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--optimize", action="store_true")
    args = parser.parse_args(argv)
    train = read(args.data_dir / "si_gfn1_train.xyz", ":")
    test = read(args.data_dir / "si_gfn1_test.xyz", ":")
    print(
        f"Si GFN1-xTB: {len(train)} training, {len(test)} test structures of {len(test[0])} atoms"
    )

    fits = {}
    settings = [("cv=None (uncalibrated)", {"cv": None}), ("cv=5 (default)", {})]
    if args.optimize:
        settings.append(("optimize=True, cv=None", {"cv": None, "optimize": True}))
    for label, params in settings:
        t0 = time.perf_counter()
        model = GAPRegressor(n_jobs=args.n_jobs, **params).fit(train)
        fits[label] = (model, time.perf_counter() - t0)

    header = (
        f"{'model':<26}{'kind':<10}{'n':>7}{'1σ':>8}{'2σ':>8}{'mean z²':>9}{'Spearman':>9}"
        f"{'area':>9}"
    )
    print("\nstds scored on the unseen test set (no calibrate call)")
    print(header)
    for label, (model, _) in fits.items():
        for line in _rows(label, _scores(model, test)):
            print(line)

    model = fits["cv=5 (default)"][0]
    half = len(test) // 2
    calibrated = GAPRegressor()
    calibrated.set_params(**model.get_params())
    calibrated.fitted_ = model.fitted_
    calibrated.calibrate(test[:half])
    print(f"\nafter calibrate on test[:{half}], scored on test[{half}:]")
    print(header)
    for line in _rows("cv=5 + calibrate", _scores(calibrated, test[half:])):
        print(line)
    for line in _rows("cv=5 (same half)", _scores(model, test[half:])):
        print(line)

    print("\nscales and fit time")
    for label, (m, seconds) in fits.items():
        s = ", ".join(f"{k} {v:.3g}" for k, v in m.std_scale_.items())
        rmse = np.sqrt(np.mean(_scores(m, test)["forces"][0] ** 2))
        print(f"  {label:<26} {seconds:7.1f} s  scales: {s}  test force RMSE {rmse:.4f} eV/Å")
    base, default = fits["cv=None (uncalibrated)"][1], fits["cv=5 (default)"][1]
    print(f"  cost of the default calibration: {default / base:.2f}x the fit time")
    print(
        "  calibrate scales: " + ", ".join(f"{k} {v:.3g}" for k, v in calibrated.std_scale_.items())
    )
    print(TARGETS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
