"""Learning curves: pool-based active learning against random selection (Si GFN1-xTB).

The training file is the pool (labels are looked up when a structure is
chosen), the test file is the test set. Both strategies refit a GAP with the
same settings and the same number of CUR sparse points (200) after every
batch. Active learning starts from 5 random structures and adds batches of 5
chosen by :func:`gapkit.active.select_batch`; random selection uses 5, 10, 20,
40 and 80 random structures. Prints force RMSE per size and seed, and the
number of labelled structures active learning needs to reach the force RMSE
that random selection reaches with 80::

    python benchmarks/bench_active_learning.py [--seeds 0 1 2] [--n-jobs 2]
        [--sparse-from labelled|pool]

``--sparse-from labelled`` (default) picks the sparse points by CUR among the
labelled structures' environments at every refit, as ``gap_fit`` does.
``--sparse-from pool`` picks them once, by CUR among the environments of the
whole pool: sparse points need no labels, so a pool-based learner can place
them where the unlabelled data are. Both strategies then use the same points
(per seed), so the comparison is still one of which structures get labelled.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase.io import read

from gapkit import SOAP, GAPRegressor
from gapkit.active import select_batch
from gapkit.design import predict_structure
from gapkit.sparsify import select_sparse_points

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
RANDOM_SIZES = (5, 10, 20, 40, 80)


def make_model(n_jobs: int, seed: int) -> GAPRegressor:
    return GAPRegressor(
        SOAP(r_cut=5.0, n_max=8, l_max=6, sigma=0.5),
        zeta=4,
        delta=1.0,
        n_sparse=200,
        sparse_method="cur",
        sigma_energy=0.002,
        sigma_force=0.1,
        sigma_virial=0.1,
        n_jobs=n_jobs,
        random_state=seed,
    )


def force_rmse(model, test, test_desc) -> float:
    err = []
    for atoms, desc in zip(test, test_desc, strict=True):
        res = predict_structure(
            desc,
            model.sparse_features_,
            model.sparse_numbers_,
            model.coefficients_ * model.delta_**2,
            model.zeta,
            forces=True,
            virial=False,
        )
        err.append((res["forces"] - atoms.get_forces()).ravel())
    return float(np.sqrt(np.mean(np.concatenate(err) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--max-labelled", type=int, default=80)
    parser.add_argument("--sparse-from", choices=["labelled", "pool"], default="labelled")
    args = parser.parse_args()

    pool = read(args.data_dir / "si_gfn1_train.xyz", ":")
    test = read(args.data_dir / "si_gfn1_test.xyz", ":")
    soap = make_model(1, 0).descriptor.set_params(species=["Si"])
    t0 = time.perf_counter()
    test_desc = [soap.features_and_derivatives(a) for a in test]
    pool_features = [soap.features(a) for a in pool]
    print(f"descriptors of test set and pool: {time.perf_counter() - t0:.0f} s", flush=True)

    random_curves, active_curves = {}, {}
    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(len(pool))
        sparse = None
        if args.sparse_from == "pool":
            every = np.vstack(pool_features)
            pick = select_sparse_points(every, 200, "cur", np.random.default_rng(seed))
            sparse = (every[pick], np.full(len(pick), 14))
        random_curves[seed] = {}
        for n in RANDOM_SIZES:
            model = make_model(args.n_jobs, seed).fit(
                [pool[i] for i in order[:n]], sparse_points=sparse
            )
            random_curves[seed][n] = force_rmse(model, test, test_desc)
            print(f"seed {seed} random {n:3d}: {random_curves[seed][n]:.4f} eV/Å", flush=True)
        labelled = list(order[:5])
        active_curves[seed] = {}
        while True:
            model = make_model(args.n_jobs, seed).fit(
                [pool[i] for i in labelled], sparse_points=sparse
            )
            active_curves[seed][len(labelled)] = force_rmse(model, test, test_desc)
            print(
                f"seed {seed} active {len(labelled):3d}: "
                f"{active_curves[seed][len(labelled)]:.4f} eV/Å",
                flush=True,
            )
            if len(labelled) >= args.max_labelled:
                break
            rest = [i for i in range(len(pool)) if i not in set(labelled)]
            pick = select_batch(
                model,
                [pool[i] for i in rest],
                args.batch,
                features=[pool_features[i] for i in rest],
            )
            labelled += [rest[i] for i in pick]

    print(
        f"\nForce RMSE (eV/Å) on the Si test set, 200 CUR sparse points from the "
        f"{args.sparse_from} structures"
    )
    sizes = sorted({n for c in active_curves.values() for n in c} | set(RANDOM_SIZES))
    header = "".join(
        f"{'seed ' + str(s) + ' rnd':>13}{'seed ' + str(s) + ' AL':>12}" for s in args.seeds
    )
    print(f"{'labelled':>9}{header}")
    for n in sizes:
        cells = ""
        for s in args.seeds:
            r = random_curves[s].get(n)
            a = active_curves[s].get(n)
            cells += f"{'' if r is None else f'{r:.4f}':>13}{'' if a is None else f'{a:.4f}':>12}"
        print(f"{n:>9}{cells}")
    print()
    for s in args.seeds:
        target = random_curves[s][80]
        reached = [n for n, v in sorted(active_curves[s].items()) if v <= target]
        need = reached[0] if reached else None
        print(
            f"seed {s}: random with 80 -> {target:.4f} eV/Å; active learning reaches it with "
            f"{need if need is not None else '> ' + str(max(active_curves[s]))} structures"
        )


if __name__ == "__main__":
    main()
