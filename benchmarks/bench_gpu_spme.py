"""GPU against CPU time of SPME energy + forces for 10⁵ and 10⁶ charges.

System: N random point charges (normal, shifted to sum to zero) placed
uniformly in a cubic box at the number density of NaCl (8 ions per
(5.64 Å)³). The SPME parameters are tuned once per N with
:func:`gapkit.electrostatics.tune_pme` at ``--accuracy`` (1e-5, not timed)
and then fixed, so both devices do the same work.

Two rows per N, each the best of ``--repeats`` calls after a warm-up call
(numba compilation, CUDA kernel compilation and cuFFT plans are excluded):

* ``mesh``: :func:`gapkit.electrostatics.pme.pme_reciprocal` energies and
  forces (B-spline tables, charge spreading, FFTs, influence function, force
  gathering). On the GPU the time includes copying positions and charges to
  the device and the results back.
* ``total``: the :class:`~gapkit.electrostatics.PME` calculator's energy,
  forces and stress. The real-space sum runs on the CPU (numba) in both
  columns; with ``device="cuda"`` it is computed after the GPU's mesh work is
  launched, so the two can overlap.

The GPU column is filled when CuPy imports and sees a device; otherwise it
says ``GPU: not available (<reason>)``. The last column gives the largest
relative difference of the GPU's energies and forces from the CPU's.

Usage::

    python benchmarks/bench_gpu_spme.py --threads 2 --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="numbers of charges"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (numba, FFTs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-total", action="store_true", help="time the mesh part only (skip the full calculator)"
    )
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numba starts
    os.environ.setdefault("NUMBA_NUM_THREADS", str(ARGS.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402

from gapkit.backend import cuda_available, resolve_device, to_numpy  # noqa: E402
from gapkit.electrostatics import PME, tune_pme  # noqa: E402
from gapkit.electrostatics.pme import pme_reciprocal  # noqa: E402

#: Ions per Å³ in rock-salt NaCl with a = 5.64 Å.
NACL_DENSITY = 8 / 5.64**3


def random_charges(n: int, seed: int) -> Atoms:
    """``n`` neutral random charges in a cube at NaCl's density."""
    rng = np.random.default_rng(seed)
    length = (n / NACL_DENSITY) ** (1 / 3)
    charges = rng.normal(size=n)
    charges -= charges.mean()
    atoms = Atoms(positions=rng.random((n, 3)) * length, cell=np.eye(3) * length, pbc=True)
    atoms.set_initial_charges(charges)
    return atoms


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls after a warm-up call, and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def rel_diff(a, b) -> float:
    """Largest |a - b| relative to the largest |b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def mesh_runner(atoms: Atoms, tuned, device: str):
    """A callable computing the mesh part on ``device``; returns NumPy energies and forces."""
    cell = atoms.cell.array
    positions = atoms.positions
    charges = atoms.get_initial_charges()
    backend = resolve_device(device, "bench_gpu_spme")

    def run():
        if backend.is_numpy:
            pos, q = positions, charges
        else:
            pos, q = backend.asarray(positions), backend.asarray(charges)
        energies, forces, _ = pme_reciprocal(
            pos, cell, q, tuned.alpha, tuned.mesh, tuned.order, compute_virial=False
        )
        return to_numpy(energies), to_numpy(forces)

    return run


def total_runner(atoms: Atoms, tuned, device: str):
    """A callable computing the PME calculator's energy, forces and stress on ``device``."""
    calc = PME(
        alpha=tuned.alpha, cutoff=tuned.cutoff, mesh=tuned.mesh, order=tuned.order, device=device
    )
    atoms = atoms.copy()
    atoms.calc = calc

    def run():
        calc.reset()
        return atoms.get_potential_energies(), atoms.get_forces()

    return run


def main() -> int:
    args = ARGS
    gpu_ok, gpu_why = cuda_available()
    gpu_cell = None if gpu_ok else f"GPU: not available ({gpu_why})"
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} CPU threads, "
        f"Python {sys.version.split()[0]}, NumPy {np.__version__}; "
        f"GPU: {gpu_why if gpu_ok else 'none'}"
    )
    print(
        f"# load average at start: {os.getloadavg()[0]:.2f}; accuracy {args.accuracy:g}; "
        f"best of {args.repeats} after a warm-up"
    )
    header = (
        f"{'N':>9}  {'part':5}  {'parameters':28}  {'CPU (s)':>8}  {'GPU (s)':>8}  "
        f"{'speed-up':>8}  {'max rel diff':>12}"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        atoms = random_charges(n, args.seed)
        tuned = tune_pme(atoms.cell.array, atoms.get_initial_charges(), args.accuracy)
        params = f"p={tuned.order} rc={tuned.cutoff:.2f} K={'x'.join(map(str, tuned.mesh))}"
        parts = [("mesh", mesh_runner)]
        if not args.no_total:
            parts.append(("total", total_runner))
        for part, runner in parts:
            t_cpu, ref = best_time(runner(atoms, tuned, "cpu"), args.repeats)
            if gpu_ok:
                t_gpu, got = best_time(runner(atoms, tuned, "cuda"), args.repeats)
                diff = max(rel_diff(g, r) for g, r in zip(got, ref, strict=True))
                print(
                    f"{n:>9}  {part:5}  {params:28}  {t_cpu:8.3f}  {t_gpu:8.3f}  "
                    f"{t_cpu / t_gpu:8.1f}  {diff:12.2e}",
                    flush=True,
                )
            else:
                print(f"{n:>9}  {part:5}  {params:28}  {t_cpu:8.3f}  {gpu_cell}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
