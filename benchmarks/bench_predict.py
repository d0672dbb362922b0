"""Energy + forces cost per MD step of the Si GAP for 64, 512 and 4096 atoms.

Uses a model written by ``bench_si_fit.py`` / ``bench_nve_drift.py`` (or fits
one) and, when given a QUIP GAP xml (``--quip-xml``) and quippy is installed,
times ``quip`` on the same cells::

    python benchmarks/bench_predict.py --model si.gap [--quip-xml si.xml] [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from ase.build import bulk

HERE = Path(__file__).resolve().parent


def cells(sizes=(2, 4, 8)):
    for n in sizes:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(n)
        atoms.rattle(0.05, seed=n)
        yield atoms


_PERTURBATION = itertools.count(1)


def time_calc(atoms, calc, repeats: int) -> float:
    """Best wall time of energy + forces over ``repeats`` calls, each on a copy moved
    by a never-repeated amount (so no calculator returns a cached result, even one
    reused across calls)."""
    best = float("inf")
    for _ in range(repeats):
        a = atoms.copy()
        a.positions[0, 0] += 1e-4 * next(_PERTURBATION)
        a.calc = calc
        t0 = time.perf_counter()
        a.get_potential_energy()
        a.get_forces()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="gapkit model file")
    parser.add_argument("--quip-xml", type=Path, help="QUIP GAP potential (gap_fit output)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[2, 4, 8],
        help="cubic repetitions of the 8-atom cell",
    )
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="processes the centres of one structure are spread over",
    )
    args = parser.parse_args()

    from gapkit import load

    model = load(args.model).set_params(n_jobs=args.n_jobs)
    rows = []
    quip = None
    if args.quip_xml is not None:
        try:
            from quippy.potential import Potential

            quip = Potential(param_filename=str(args.quip_xml))
        except ImportError:
            print("quippy not installed: QUIP column skipped")
    for atoms in cells(args.sizes):
        repeats = 3 if len(atoms) <= 512 else 1
        time_calc(atoms, model.calculator(), 1)  # start the worker processes
        t = time_calc(atoms, model.calculator(), repeats)
        tq = time_calc(atoms, quip, repeats) if quip is not None else float("nan")
        rows.append((len(atoms), t, tq))
    print(
        f"\nSi, r_cut 5, n_max 8, l_max 6, {len(model.coefficients_)} sparse points, "
        f"neighbour cutoff {model.descriptor_.neighbour_cutoff:.2f} Å, n_jobs={args.n_jobs}"
    )
    print(f"{'atoms':>7}{'gapkit s/step':>15}{'gapkit ms/atom':>16}{'quip ms/atom':>14}")
    for n, t, tq in rows:
        print(f"{n:>7}{t:>15.3f}{t / n * 1e3:>16.3f}{tq / n * 1e3:>14.3f}")


if __name__ == "__main__":
    main()
