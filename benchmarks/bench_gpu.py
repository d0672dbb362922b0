"""GPU against CPU for the dense parts of fitting and prediction.

Two measurements, each on the CPU (NumPy) and, when CuPy sees a CUDA device,
on the GPU, with the same descriptors (DScribe, CPU) fed to both:

1. design-matrix assembly plus the streaming QR solve for Cu/EMT structures
   of 108 atoms (``--structures``, default 1000) with ``--n-sparse`` sparse
   points (default 2000), r_cut 4.5, n_max 8, l_max 6: rows of every structure
   are built from its descriptor derivatives, folded into R block by block,
   and the weights solved;
2. energy+force prediction on Si diamond cells of 4096 and 32768 atoms
   (``--cells``): the kernel and force contraction of every centre chunk.

Descriptor time is printed separately: it is CPU work on both paths. The
speed-up column is CPU time / GPU time of the dense part::

    python benchmarks/bench_gpu.py                      # the issue's sizes
    python benchmarks/bench_gpu.py --structures 20 --n-sparse 500 --cells 4096  # quick
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase.build import bulk

from gapkit import SOAP
from gapkit.backend import Backend, cuda_available, resolve_device, to_numpy
from gapkit.datasets import make_cu_emt
from gapkit.design import design_rows, predict_structure
from gapkit.gp import StreamingQR, cholesky_with_jitter
from gapkit.kernels import kernel

ROWS_PER_BLOCK = 8192
CENTRE_CHUNK = 256


def synchronize(backend: Backend) -> None:
    if backend.device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def fit_dense(descs, energies, forces, q_sparse, backend: Backend) -> tuple[float, np.ndarray]:
    """Seconds for rows + QR + solve on ``backend``, and the weights."""
    xp = backend.xp
    m = len(q_sparse)
    z_sparse = np.full(m, 29)
    synchronize(backend)
    t0 = time.perf_counter()
    qs = backend.asarray(q_sparse)
    delta = backend.asarray(np.ones(m))
    solver = StreamingQR(m, prior=cholesky_with_jitter(kernel(qs, qs, 4, 1.0), 1e-8))
    block, targets, n_rows = [], [], 0
    for desc, e, f in zip(descs, energies, forces, strict=True):
        rows = design_rows(desc, qs, z_sparse, delta, 4, virial=False)
        block += [
            xp.reshape(rows["energy"], (1, m)) / 0.002,
            xp.reshape(rows["forces"], (-1, m)) / 0.1,
        ]
        targets += [np.array([e / 0.002]), f.ravel() / 0.1]
        n_rows += 1 + f.size
        if n_rows >= ROWS_PER_BLOCK:
            solver.add_rows(xp.concat(block, axis=0), backend.asarray(np.concatenate(targets)))
            block, targets, n_rows = [], [], 0
    if block:
        solver.add_rows(xp.concat(block, axis=0), backend.asarray(np.concatenate(targets)))
    alpha = to_numpy(solver.solve())
    synchronize(backend)
    return time.perf_counter() - t0, alpha


def predict_dense(chunks, n_atoms, q_sparse, weights, backend: Backend) -> tuple[float, np.ndarray]:
    """Seconds for the kernel and force contraction of every chunk, and the forces."""
    m = len(q_sparse)
    synchronize(backend)
    t0 = time.perf_counter()
    qs, w = backend.asarray(q_sparse), backend.asarray(weights)
    forces = np.zeros((n_atoms, 3))
    for desc in chunks:
        res = predict_structure(desc, qs, np.full(m, 14), w, 4, virial=False, n_atoms=n_atoms)
        forces += to_numpy(res["forces"])
    synchronize(backend)
    return time.perf_counter() - t0, forces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=1000)
    parser.add_argument("--n-sparse", type=int, default=2000)
    parser.add_argument(
        "--cells",
        type=int,
        nargs="+",
        default=[4096, 32768],
        help="Si cell sizes (atoms): 8 n^3 for a cubic n x n x n repeat",
    )
    args = parser.parse_args()

    ok, why = cuda_available()
    backends = [resolve_device("cpu")] + ([resolve_device("cuda")] if ok else [])
    print(f"GPU: {why if ok else 'not available (' + why + ')'}")
    table = []

    # 1. design matrix + solve, Cu/EMT
    soap = SOAP(species=["Cu"], r_cut=4.5, n_max=8, l_max=6, sigma=0.5)
    frames = make_cu_emt(args.structures, kinds=("bulk",), seed=1)
    t0 = time.perf_counter()
    descs = [soap.features_and_derivatives(a) for a in frames]
    t_desc = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    pool = np.vstack([d.features for d in descs])
    q_sparse = pool[rng.choice(len(pool), min(args.n_sparse, len(pool)), replace=False)]
    energies = [a.get_potential_energy() for a in frames]
    forces = [a.get_forces() for a in frames]
    times, alphas = {}, {}
    for be in backends:
        times[be.device], alphas[be.device] = fit_dense(descs, energies, forces, q_sparse, be)
    del descs
    diff = (
        np.linalg.norm(alphas["cuda"] - alphas["cpu"]) / np.linalg.norm(alphas["cpu"])
        if ok
        else None
    )
    table.append(
        (f"rows + QR solve: Cu {args.structures} x 108 at, M={len(q_sparse)}", t_desc, times, diff)
    )
    print(table[-1], flush=True)

    # 2. energy + forces, Si cells
    soap = SOAP(species=["Si"], r_cut=5.0, n_max=8, l_max=6, sigma=0.5)
    q_sparse = soap.features(bulk("Si", "diamond", a=5.43, cubic=True).repeat(3))
    q_sparse = q_sparse + 0.01 * rng.normal(size=q_sparse.shape)
    q_sparse /= np.linalg.norm(q_sparse, axis=1, keepdims=True)
    q_sparse = np.vstack([q_sparse] * (args.n_sparse // len(q_sparse) + 1))[: args.n_sparse]
    weights = rng.normal(size=len(q_sparse)) * 1e-3
    for n_atoms in args.cells:
        reps = round((n_atoms / 8) ** (1 / 3))
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
        atoms.rattle(0.05, seed=2)
        pairs = soap.neighbour_list(atoms)
        t0 = time.perf_counter()
        chunks = [
            soap.features_and_derivatives(atoms, centres=c, neighbours=pairs)
            for c in np.array_split(np.arange(len(atoms)), -(-len(atoms) // CENTRE_CHUNK))
        ]
        t_desc = time.perf_counter() - t0
        times, results = {}, {}
        for be in backends:
            times[be.device], results[be.device] = predict_dense(
                chunks, len(atoms), q_sparse, weights, be
            )
        del chunks
        diff = (
            np.abs(results["cuda"] - results["cpu"]).max() / np.abs(results["cpu"]).max()
            if ok
            else None
        )
        table.append(
            (f"E+F predict: Si {len(atoms)} atoms, M={len(q_sparse)}", t_desc, times, diff)
        )
        print(table[-1], flush=True)

    print(
        f"\n{'dense part':<46}{'descr. s':>9}{'CPU s':>9}{'GPU s':>9}{'speed-up':>9}"
        f"{'rel. diff':>10}"
    )
    for name, t_desc, times, diff in table:
        cpu, gpu = times["cpu"], times.get("cuda")
        gpu_s = "n/a" if gpu is None else f"{gpu:.3f}"
        speed = "n/a" if gpu is None else f"{cpu / gpu:.1f}x"
        rel = "n/a" if diff is None else f"{diff:.1e}"
        print(f"{name:<46}{t_desc:>9.2f}{cpu:>9.2f}{gpu_s:>9}{speed:>9}{rel:>10}")
    print("(descriptors: DScribe on the CPU for both; CPU = NumPy on this machine's cores)")


if __name__ == "__main__":
    main()
