"""Wall time of one on-the-fly update: full refit vs incremental (IncrementalGAP).

One update of :class:`gapkit.active.OnTheFlyLearner` adds one labelled
structure and the 10 environments of it with the largest local-energy std as
sparse points. Before, the model was refitted from scratch on all labelled
structures (``clone(model).fit(labelled + [new], sparse_points=grown)``: every
descriptor, derivative and design-matrix row again); now
:class:`gapkit.active.IncrementalGAP` computes the new columns of the cached
structures and the rows of the new one, and redoes the QR. For N labelled
Cu/EMT structures of 32 atoms (``gapkit.datasets.make_cu_emt``, the settings
of ``examples/03_on_the_fly_cu_emt.py``: SOAP(r_cut=4.0, n_max=6, l_max=4,
sigma=0.5), sigma_energy=0.001, sigma_force=0.02, sigma_virial=0.02,
n_sparse=300) it prints:

- ``pick``: choosing the 10 points (local-energy stds of the new structure;
  the same in both ways, not counted in either column);
- ``refit`` and ``incremental``: one update (structure + 10 sparse points);
- ``partial_fit``, ``incr. data`` and ``refit data``: the new structure only,
  sparse points unchanged (``GAPRegressor.partial_fit``,
  ``IncrementalGAP.add_structures`` and a refit with the same sparse points);
- ``cache``: memory of the incremental cache (descriptors with derivatives
  and rows of the N structures);
- ``diff``: largest difference of the weights of the incremental and the
  refitted model, relative to the largest weight; ``F diff``: the same for
  the forces they predict on the new structure. The weights differ more than
  the predictions: the new columns are computed apart from the old ones,
  which changes the rows by an ulp, and near-duplicate sparse points (``K_MM``
  only kept positive definite by the jitter) amplify that along directions
  that barely change any prediction.

Each time is the best of ``--repeats`` (the incremental object, or the
model for ``partial_fit``, is copied before each try, untimed). Run on one core::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_otf_update.py [--sizes 10 25 50]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
from sklearn.base import clone

from gapkit import SOAP, GAPRegressor
from gapkit.active import IncrementalGAP, most_uncertain_environments
from gapkit.datasets import make_cu_emt

N_SPARSE_ADD = 10


def best_time(fn, repeats: int):
    """Best wall time of ``fn()`` over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def best_time_on_copy(obj, fn, repeats: int):
    """Best wall time of ``fn(copy)`` over ``repeats`` fresh deep copies of ``obj``
    (the copying is not timed), and the last copy."""
    best, work = float("inf"), None
    for _ in range(repeats):
        work = copy.deepcopy(obj)
        t0 = time.perf_counter()
        fn(work)
        best = min(best, time.perf_counter() - t0)
    return best, work


def update(inc, q_new, z_new, new) -> None:
    """One on-the-fly update, incrementally."""
    inc.add_sparse_points(q_new, z_new)
    inc.add_structures([new])


def row(labelled, new, template, repeats: int) -> str:
    """One line of the table: N labelled structures, one update by ``new``."""
    base = IncrementalGAP(clone(template), labelled)
    model = base.model
    m = len(model.sparse_numbers_)
    t_pick, (q_new, z_new) = best_time(
        lambda: most_uncertain_environments(model, new, N_SPARSE_ADD), 1
    )
    q_all = np.vstack([model.sparse_features_, q_new])
    z_all = np.concatenate([model.sparse_numbers_, z_new])
    fixed = clone(model).set_params(e0=dict(model.e0_))  # e0 as the incremental model's

    # one OTF update: a structure and 10 sparse points
    t_refit, refitted = best_time(
        lambda: clone(fixed).fit(labelled + [new], sparse_points=(q_all, z_all)), repeats
    )
    t_inc, inc = best_time_on_copy(base, lambda inc: update(inc, q_new, z_new, new), repeats)
    ref = refitted.coefficients_
    diff = np.abs(inc.model.coefficients_ - ref).max() / np.abs(ref).max()
    f_ref = refitted.predict_forces([new])[0]
    f_diff = np.abs(inc.model.predict_forces([new])[0] - f_ref).max() / np.abs(f_ref).max()
    del inc, refitted

    # data only (sparse points unchanged)
    t_partial, _ = best_time_on_copy(model, lambda m: m.partial_fit([new]), repeats)
    t_inc_data, _ = best_time_on_copy(base, lambda inc: inc.add_structures([new]), repeats)
    t_refit_data, _ = best_time(
        lambda: clone(fixed).fit(
            labelled + [new], sparse_points=(model.sparse_features_, model.sparse_numbers_)
        ),
        repeats,
    )
    return (
        f"{len(labelled):>4} {m:>5} {t_pick:>6.2f}s {t_refit:>7.2f}s {t_inc:>11.2f}s "
        f"{t_refit / t_inc:>8.1f}x {t_partial:>11.2f}s {t_inc_data:>10.2f}s "
        f"{t_refit_data:>10.2f}s {base.cache_nbytes / 2**20:>6.0f} MiB {diff:>8.1e} "
        f"{f_diff:>8.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10, 25, 50],
        help="numbers of labelled structures N",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-sparse", type=int, default=300)
    args = parser.parse_args()

    frames = make_cu_emt(max(args.sizes) + 1, repeat=(2, 2, 2), seed=11)
    template = GAPRegressor(
        SOAP(r_cut=4.0, n_max=6, l_max=4, sigma=0.5),
        n_sparse=args.n_sparse,
        sigma_energy=0.001,
        sigma_force=0.02,
        sigma_virial=0.02,
        random_state=0,
    )
    header = (
        f"{'N':>4} {'M':>5} {'pick':>7} {'refit':>8} {'incremental':>12} {'speed-up':>9}"
        f" {'partial_fit':>12} {'incr. data':>11} {'refit data':>11} {'cache':>9}"
        f" {'diff':>8} {'F diff':>8}"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        print(row(frames[:n], frames[n], template, args.repeats), flush=True)


if __name__ == "__main__":
    main()
