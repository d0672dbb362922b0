"""Time and peak memory of the uncertainty (std) path on Si cells of 1k to 50k atoms.

The std of the energy (``predict(return_std=True)``) and of the forces
(``predict_forces(return_std=True)``) of one whole cell, in the fitted
``variance`` form (DTC by default), for diamond Si cells rattled by 0.05 Å.
The model: r_cut 5, n_max 6, l_max 4, sigma 0.5, 200 sparse points, fitted
on the Si GFN1-xTB training set (``--data-dir``; without it on eight rattled
64-atom cells labelled by a Lennard-Jones potential), saved to ``--model`` and
reused when that file exists.

Each measurement runs in a fresh process (so that ``ru_maxrss`` is its own),
after a warm-up on an 8-atom cell (numba compilation is not counted), and
reports the wall time, the tracemalloc peak (NumPy and Python allocations;
arrays allocated inside numba kernels are not traced) and the resident set:
the process's lifetime peak (``ru_maxrss``, model loading included), the
call's own peak (``VmHWM`` reset before the call) and its growth over the
resident set before the call::

    python benchmarks/bench_std_memory.py [--sizes 1000 8000 50000] [--kinds energy forces]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from ase.build import bulk

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_FILE = "si_gfn1_train.xyz"
SOAP_PARAMS = dict(r_cut=5.0, n_max=6, l_max=4, sigma=0.5)


def si_cell(n_atoms: int, seed: int = 0):
    """Rattled diamond Si with close to ``n_atoms`` atoms (8 per cubic cell, the
    repetitions as equal as they can be)."""
    k = max(1, round((n_atoms / 8) ** (1 / 3)))
    candidates = [
        (a, b, c)
        for a in range(max(1, k - 1), k + 2)
        for b in range(a, k + 2)
        for c in range(b, k + 2)
    ]
    rep = min(candidates, key=lambda r: (abs(8 * np.prod(r) - n_atoms), max(r) - min(r)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(rep)
    atoms.rattle(0.05, seed=seed)
    return atoms


def training_frames(data_dir: Path, n_train: int | None):
    from ase.io import read

    path = data_dir / TRAIN_FILE
    if path.exists():
        frames = read(path, ":")
        if n_train:
            frames = frames[:: max(1, len(frames) // n_train)][:n_train]
        return frames, f"{len(frames)} structures of {path}"
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for seed in range(8):
        atoms = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * (seed - 4)), cubic=True).repeat(2)
        atoms.rattle(0.1, seed=seed)
        atoms.calc = LennardJones(sigma=2.1, epsilon=0.5, rc=4.5, smooth=True)
        labels = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames, f"{path} absent: 8 rattled 64-atom cells labelled by Lennard-Jones"


def fit_model(args) -> str:
    from gapkit import SOAP, GAPRegressor

    frames, what = training_frames(args.data_dir, args.n_train)
    t0 = time.perf_counter()
    model = GAPRegressor(
        SOAP(**SOAP_PARAMS), n_sparse=args.n_sparse, variance=args.variance, random_state=0
    ).fit(frames)
    model.save(args.model)
    return f"fitted on {what} in {time.perf_counter() - t0:.0f} s"


def _status_mb(key: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in MiB (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> None:
    """One measurement (in its own process); prints one JSON line."""
    from gapkit import load

    model = load(args.model)
    call = model.predict if args.kind == "energy" else model.predict_forces
    call([si_cell(8)], return_std=True)  # compile the numba kernels of this path
    atoms = si_cell(args.atoms, seed=1)
    reset = _reset_peak_rss()
    rss0, maxrss0 = _status_mb("VmRSS"), _maxrss_mb()
    if args.tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    _, std = call([atoms], return_std=True)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else float("nan")
    tracemalloc.stop()
    maxrss = _maxrss_mb()
    # the call's own peak: VmHWM since the reset, else ru_maxrss (which may be
    # the loading's peak, so the growth then is a lower bound)
    peak_rss = _status_mb("VmHWM") if reset else max(maxrss, maxrss0)
    print(
        json.dumps(
            {
                "atoms": len(atoms),
                "kind": args.kind,
                "wall_s": wall,
                "tracemalloc_mb": peak / 2**20,
                "maxrss_mb": maxrss,
                "rss_before_mb": rss0,
                "peak_rss_mb": peak_rss,
                "rss_growth_mb": peak_rss - rss0,
                "mean_std": float(np.mean(std[0])),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 50000])
    parser.add_argument("--kinds", nargs="+", default=["energy", "forces"])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--n-train", type=int, default=None, help="training structures used")
    parser.add_argument("--n-sparse", type=int, default=200)
    parser.add_argument("--variance", choices=["dtc", "sor"], default="dtc")
    parser.add_argument("--model", type=Path, default=None, help="model file (fitted if absent)")
    parser.add_argument(
        "--no-tracemalloc",
        dest="tracemalloc",
        action="store_false",
        help="time without tracemalloc (its bookkeeping slows allocations)",
    )
    parser.add_argument("--json", type=Path, help="write the measurements here")
    # one measurement in this process (used by the runs main starts)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--atoms", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    if args.model is None:
        args.model = Path(tempfile.gettempdir()) / f"bench_std_memory_{args.variance}.gap"
    fitted = f"model {args.model} reused"
    if not args.model.exists():
        fitted = fit_model(args)
    print(fitted, flush=True)
    print(
        f"{platform.node()}: {os.cpu_count()} cores, load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg()),
        flush=True,
    )
    rows = []
    for n in args.sizes:
        for kind in args.kinds:
            cmd = [sys.executable, __file__, "--worker", "--model", str(args.model)]
            cmd += ["--atoms", str(n), "--kind", kind]
            if not args.tracemalloc:
                cmd.append("--no-tracemalloc")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\nSi, r_cut {SOAP_PARAMS['r_cut']}, n_max {SOAP_PARAMS['n_max']}, "
        f"l_max {SOAP_PARAMS['l_max']}, {args.n_sparse} sparse points, {args.variance.upper()}"
    )
    head = (
        f"{'atoms':>7} {'std of':>7} {'wall s':>8} {'ms/atom':>8} {'tracemalloc MB':>15}"
        f" {'kB/atom':>8} {'ru_maxrss MB':>13} {'call peak RSS MB':>17} {'growth MB':>10}"
        f" {'kB/atom':>8}"
    )
    print(head)
    for r in rows:
        n = r["atoms"]
        print(
            f"{n:>7} {r['kind']:>7} {r['wall_s']:>8.1f} {1e3 * r['wall_s'] / n:>8.2f}"
            f" {r['tracemalloc_mb']:>15.1f} {1024 * r['tracemalloc_mb'] / n:>8.1f}"
            f" {r['maxrss_mb']:>13.0f} {r['peak_rss_mb']:>17.0f} {r['rss_growth_mb']:>10.0f}"
            f" {1024 * r['rss_growth_mb'] / n:>8.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
