"""Energy conservation of a fitted Si GAP in NVE molecular dynamics.

Fits (or loads) the Si GFN1-xTB model with the benchmark settings, then runs
velocity-Verlet MD of a 64-atom cell started at 1000 K with a 1 fs step and
prints the drift of the total energy (slope of a linear fit, meV/atom/ps) and
its spread (standard deviation, meV/atom)::

    python benchmarks/bench_nve_drift.py --ps 5 [--tolerance 1e-10] [--model si.gap]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


def fit_model(data: Path, tolerance: float, n_jobs: int):
    from gapkit import SOAP, GAPRegressor

    train = read(data / "si_gfn1_train.xyz", ":")
    model = GAPRegressor(
        SOAP(r_cut=5.0, n_max=8, l_max=6, sigma=0.5, cutoff_tolerance=tolerance),
        zeta=4,
        delta=1.0,
        n_sparse=500,
        sparse_method="cur",
        sigma_energy=0.002,
        sigma_force=0.1,
        sigma_virial=0.1,
        n_jobs=n_jobs,
        random_state=0,
    )
    return model.fit(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ps", type=float, default=5.0, help="length of the run in ps")
    parser.add_argument("--tolerance", type=float, default=None, help="SOAP cutoff_tolerance")
    parser.add_argument("--model", type=Path, help="model file to load, or to write after fit")
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()

    from gapkit import SOAP, load

    tol = args.tolerance or SOAP().cutoff_tolerance
    if args.model is not None and args.model.exists():
        model = load(args.model)
    else:
        model = fit_model(args.data_dir, tol, args.n_jobs)
        if args.model is not None:
            model.save(args.model)
    tol = model.descriptor_.cutoff_tolerance

    atoms = read(args.data_dir / "si_gfn1_train.xyz", "0")
    assert len(atoms) == 64
    atoms.calc = model.calculator()
    rng = np.random.default_rng(0)
    sigma_v = np.sqrt(1000 * units.kB / atoms.get_masses())[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * sigma_v * atoms.get_masses()[:, None])
    atoms.set_momenta(atoms.get_momenta() - atoms.get_momenta().mean(axis=0))
    n_steps = int(round(args.ps * 1000))
    dyn = VelocityVerlet(atoms, 1 * units.fs)
    totals, temps = [atoms.get_total_energy()], []
    t0 = time.perf_counter()
    for _ in range(n_steps):
        dyn.run(1)
        totals.append(atoms.get_total_energy())
        temps.append(atoms.get_temperature())
    wall = time.perf_counter() - t0
    e = np.array(totals) / len(atoms) * 1e3  # meV/atom
    t_ps = np.arange(len(e)) * 1e-3
    slope, intercept = np.polyfit(t_ps, e, 1)
    spread = float(np.std(e - (slope * t_ps + intercept)))
    print(
        f"\nNVE, Si 64 atoms, start 1000 K, 1 fs, {args.ps:g} ps, cutoff_tolerance {tol:g}, "
        f"neighbour cutoff {model.descriptor_.neighbour_cutoff:.2f} Å"
    )
    print(f"{'drift meV/atom/ps':>18}{'spread meV/atom':>17}{'mean T K':>10}{'ms/step':>9}")
    print(f"{slope:>18.5f}{spread:>17.4f}{np.mean(temps):>10.0f}{wall / n_steps * 1e3:>9.1f}")


if __name__ == "__main__":
    main()
