"""Fit the Si GFN1-xTB set with gapkit and, when quippy-ase is installed, QUIP's gap_fit.

Settings (both codes): r_cut 5 Å, n_max 8, l_max 6, atom sigma 0.5 Å, zeta 4,
delta 1 eV, 500 CUR sparse points, sigma_E/F/V = 0.002 eV/atom, 0.1 eV/Å,
0.1 eV/atom. Prints energy and force RMSE on the test set, fit wall time,
prediction time per atom (energy + forces) and peak resident memory.

Each code runs in its own child process so that its peak memory is its own::

    python benchmarks/bench_si_fit.py [--data-dir ../shared/data] [--skip-quip]
        [--save-dir DIR]

``--save-dir`` keeps both fitted models (``DIR/si.gap``, ``DIR/si.xml``) for
``bench_predict.py --model DIR/si.gap --quip-xml DIR/si.xml``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
SETTINGS = dict(
    r_cut=5.0,
    n_max=8,
    l_max=6,
    sigma=0.5,
    zeta=4,
    delta=1.0,
    n_sparse=500,
    sigma_energy=0.002,
    sigma_force=0.1,
    sigma_virial=0.1,
)


def _peak_rss_gb() -> float:
    """Peak RSS of this process plus the largest child (kB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + child) / 1024**2


def _errors(pred_e, pred_f, frames):
    de = [(e - a.get_potential_energy()) / len(a) for e, a in zip(pred_e, frames, strict=True)]
    df = np.concatenate([(f - a.get_forces()).ravel() for f, a in zip(pred_f, frames, strict=True)])
    return float(np.sqrt(np.mean(np.square(de)))), float(np.sqrt(np.mean(df**2)))


def run_gapkit(data: Path, n_jobs: int, tolerance: float, save_dir: Path | None) -> dict:
    from ase.io import read

    from gapkit import SOAP, GAPRegressor

    train = read(data / "si_gfn1_train.xyz", ":")
    test = read(data / "si_gfn1_test.xyz", ":")
    s = SETTINGS
    model = GAPRegressor(
        SOAP(
            r_cut=s["r_cut"],
            n_max=s["n_max"],
            l_max=s["l_max"],
            sigma=s["sigma"],
            cutoff_tolerance=tolerance,
        ),
        zeta=s["zeta"],
        delta=s["delta"],
        n_sparse=s["n_sparse"],
        sparse_method="cur",
        sigma_energy=s["sigma_energy"],
        sigma_force=s["sigma_force"],
        sigma_virial=s["sigma_virial"],
        n_jobs=n_jobs,
        random_state=0,
    )
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    peak = _peak_rss_gb()
    if save_dir is not None:
        model.save(save_dir / "si.gap")
    model.set_params(n_jobs=1)
    t0 = time.perf_counter()
    res = model.predict_all(test, stress=False)
    pred_s = time.perf_counter() - t0
    e_rmse, f_rmse = _errors([r["energy"] for r in res], [r["forces"] for r in res], test)
    n_atoms = sum(len(a) for a in test)
    return dict(
        code=f"gapkit (n_jobs={n_jobs})",
        e_rmse=e_rmse,
        f_rmse=f_rmse,
        fit_s=fit_s,
        ms_per_atom=pred_s / n_atoms * 1e3,
        peak_gb=peak,
    )


def run_quip(data: Path, save_dir: Path | None) -> dict:
    from ase.io import read, write
    from quippy.potential import Potential

    exe = shutil.which("gap_fit")
    if exe is None:
        raise RuntimeError("gap_fit not found")
    s = SETTINGS
    with tempfile.TemporaryDirectory() as tmp:
        frames = read(data / "si_gfn1_train.xyz", ":")
        for a in frames:
            a.info["virial"] = -a.get_stress(voigt=False) * a.get_volume()
            a.info["energy"] = a.get_potential_energy()
            a.arrays["forces"] = a.get_forces()
            a.calc = None
        train = Path(tmp) / "train.xyz"
        write(train, frames)
        gp_file = Path(tmp) / "si.xml"
        gap = (
            f"soap cutoff={s['r_cut']} n_max={s['n_max']} l_max={s['l_max']} "
            f"atom_sigma={s['sigma']} zeta={s['zeta']} delta={s['delta']} "
            f"n_sparse={s['n_sparse']} sparse_method=cur_points covariance_type=dot_product"
        )
        cmd = [
            exe,
            f"at_file={train}",
            f"gap={{{gap}}}",
            f"default_sigma={{{s['sigma_energy']} {s['sigma_force']} {s['sigma_virial']} 0.0}}",
            "energy_parameter_name=energy",
            "force_parameter_name=forces",
            "virial_parameter_name=virial",
            "e0_method=average",
            "sparse_jitter=1e-8",
            f"gp_file={gp_file}",
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fit_s = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        pot = Potential(param_filename=str(gp_file))
        test = read(data / "si_gfn1_test.xyz", ":")
        pe, pf = [], []
        t0 = time.perf_counter()
        for a in test:
            b = a.copy()
            b.calc = pot
            pe.append(b.get_potential_energy())
            pf.append(b.get_forces())
        pred_s = time.perf_counter() - t0
        if save_dir is not None:
            for f in Path(tmp).glob("si.xml*"):
                shutil.copy(f, save_dir / f.name)
    e_rmse, f_rmse = _errors(pe, pf, test)
    n_atoms = sum(len(a) for a in test)
    return dict(
        code="QUIP gap_fit / quip",
        e_rmse=e_rmse,
        f_rmse=f_rmse,
        fit_s=fit_s,
        ms_per_atom=pred_s / n_atoms * 1e3,
        peak_gb=peak,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--tolerance", type=float, default=None, help="SOAP cutoff_tolerance (default: gapkit's)"
    )
    parser.add_argument("--skip-quip", action="store_true")
    parser.add_argument(
        "--save-dir", type=Path, default=None, help="keep the fitted models here (si.gap, si.xml)"
    )
    parser.add_argument("--worker", choices=["gapkit", "quip"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.worker == "gapkit":
            from gapkit import SOAP

            tol = args.tolerance or SOAP().cutoff_tolerance
            result = run_gapkit(args.data_dir, args.n_jobs, tol, args.save_dir)
        else:
            result = run_quip(args.data_dir, args.save_dir)
        print("RESULT " + json.dumps(result))
        return

    if not (args.data_dir / "si_gfn1_train.xyz").exists():
        sys.exit(f"Si data not found in {args.data_dir}; pass --data-dir.")
    workers = ["gapkit"]
    if not args.skip_quip:
        if shutil.which("gap_fit"):
            workers.append("quip")
        else:
            print("quippy-ase not installed: QUIP row skipped (pip install quippy-ase).")
    rows = []
    for w in workers:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            w,
            "--data-dir",
            str(args.data_dir),
            "--n-jobs",
            str(args.n_jobs),
        ]
        if args.tolerance:
            cmd += ["--tolerance", str(args.tolerance)]
        if args.save_dir:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["--save-dir", str(args.save_dir.resolve())]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(f"{w} failed:\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(line[0][7:]))
    print(f"\nSi GFN1-xTB, train 160 / test 40 structures, cpu count {os.cpu_count()}")
    print(
        f"{'code':<24}{'E RMSE meV/at':>14}{'F RMSE eV/Å':>13}{'fit s':>9}"
        f"{'ms/atom E+F':>13}{'peak GB':>9}"
    )
    for r in rows:
        print(
            f"{r['code']:<24}{r['e_rmse'] * 1e3:>14.3f}{r['f_rmse']:>13.4f}{r['fit_s']:>9.1f}"
            f"{r['ms_per_atom']:>13.3f}{r['peak_gb']:>9.2f}"
        )


if __name__ == "__main__":
    main()
