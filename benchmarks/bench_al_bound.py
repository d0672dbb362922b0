"""How far can any choice of 40 Si structures go? Bounds for the active-learning target.

The active-learning benchmark (``bench_active_learning.py --sparse-from
pool``) asks how many labelled structures active learning needs to reach the
force RMSE that random selection reaches with 80. With the sparse points fixed
(200 CUR points from the pool environments, per seed) and the hyperparameters
fixed, a fit is a linear least-squares problem in the sparse-point weights, so
the design rows of every pool and test structure can be computed once and any
subset fitted in milliseconds. That makes greedy *oracles* affordable:

- *random*: the first n structures of the seed's permutation (as the
  benchmark's random curve);
- *AL*: greedy label-free selection by the summed posterior variance of the
  local energies (SoR part), conditioning on each choice (what
  :func:`gapkit.active.select_batch` does when the sparse points stay fixed,
  less its DTC gap term, ~1e-3 of the score on this set);
- *AL forces*: the same with the summed variance of the force components;
- *V-optimal*: the structure whose labels most reduce the summed posterior
  variance of the force components of the whole pool (label-free too);
- *pool oracle*: greedy, at each step the structure whose labels most reduce
  the force RMSE on the whole pool, using every pool label (not available to a
  real learner, but no test information);
- *test oracle*: greedy by the force RMSE on the test set itself (an upper
  bound for any rule that picks one structure at a time).

All start from the same 5 random structures. The fast solver is checked
against :class:`gapkit.GAPRegressor` on one subset per seed. Run::

    python benchmarks/bench_al_bound.py [--seeds 0 1 2] [--size 40]

60-80 s per seed on one core after the descriptors (~45 s).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.linalg
from ase.io import read
from bench_active_learning import DEFAULT_DATA, force_rmse, make_model

from gapkit import kernels
from gapkit.design import design_rows, local_energy_rows
from gapkit.gp import cholesky_with_jitter
from gapkit.sparsify import select_sparse_points

SIZES = tuple(range(5, 85, 5))


class FixedSparseProblem:
    """Sparse GP with fixed sparse points and hyperparameters, solved by normal
    equations in the basis whitened by ``L`` (precision ``I + sum_s G_s``,
    smallest eigenvalue >= 1, so well conditioned)."""

    def __init__(self, model, q_sparse, pool, pool_desc, test, test_desc):
        m = len(q_sparse)
        self.m = m
        z = np.full(m, 14)
        delta = np.full(m, model.delta)
        self.l_factor = cholesky_with_jitter(
            kernels.kernel(q_sparse, q_sparse, model.zeta, model.delta), model.jitter
        )

        def whiten(rows):
            return scipy.linalg.solve_triangular(self.l_factor, rows.T, lower=True).T

        def rows_of(desc):
            r = design_rows(desc, q_sparse, z, delta, model.zeta)
            return whiten(np.vstack([r["energy"][None], r["forces"].reshape(-1, m), r["virial"]]))

        self.n_atoms = np.array([len(a) for a in pool])
        self.energy = np.array([a.get_potential_energy() for a in pool])
        self.gram, self.rhs, self.energy_col = [], [], []
        self.pool_force_rows, self.local_rows = [], []
        for atoms, desc in zip(pool, pool_desc, strict=True):
            w = rows_of(desc)
            n = len(atoms)
            noise = model.fitted_.noise.sigmas(atoms)  # energy and virial times sqrt(n)
            sigma = np.concatenate(
                [[noise["energy"]], noise["force"].ravel(), np.full(6, noise["virial"])]
            )
            y = np.concatenate(
                [
                    [atoms.get_potential_energy()],
                    atoms.get_forces().ravel(),
                    atoms.get_stress() * atoms.get_volume(),
                ]
            )
            ws = w / sigma[:, None]
            self.gram.append(ws.T @ ws)
            self.rhs.append(ws.T @ (y / sigma))  # e0 enters through energy_col
            self.energy_col.append(ws[0] * n / sigma[0])
            self.pool_force_rows.append(w[1:-6])
            self.local_rows.append(
                whiten(
                    local_energy_rows(desc.features, atoms.numbers, q_sparse, z, delta, model.zeta)
                )
            )
        self.pool_forces = np.concatenate([a.get_forces().ravel() for a in pool])
        self.all_pool_rows = np.vstack(self.pool_force_rows)
        self.pool_gram = self.all_pool_rows.T @ self.all_pool_rows
        self.test_rows = np.vstack([rows_of(d)[1:-6] for d in test_desc])
        self.test_forces = np.concatenate([a.get_forces().ravel() for a in test])

    def precision(self, chosen):
        return np.eye(self.m) + sum(self.gram[i] for i in chosen)

    def weights(self, chosen, precision=None):
        """Whitened weights of the fit on ``chosen`` (e0 by least squares, as fit does)."""
        n, e = self.n_atoms[chosen], self.energy[chosen]
        e0 = float(np.sum(e * n) / np.sum(n * n))
        rhs = sum(self.rhs[i] - e0 * self.energy_col[i] for i in chosen)
        p = self.precision(chosen) if precision is None else precision
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(p), rhs)

    def test_rmse(self, chosen, precision=None):
        return float(
            np.sqrt(
                np.mean((self.test_rows @ self.weights(chosen, precision) - self.test_forces) ** 2)
            )
        )

    def pool_rmse(self, chosen, precision=None):
        return float(
            np.sqrt(
                np.mean(
                    (self.all_pool_rows @ self.weights(chosen, precision) - self.pool_forces) ** 2
                )
            )
        )

    # Scores of candidate ``i`` (higher is better) given the chosen structures,
    # their posterior precision and its Cholesky factor.
    def local_energy_variance(self, chosen, i, precision, factor):
        x = scipy.linalg.cho_solve(factor, self.local_rows[i].T)
        return float(np.sum(self.local_rows[i].T * x))

    def force_variance(self, chosen, i, precision, factor):
        rows = self.pool_force_rows[i]
        x = scipy.linalg.cho_solve(factor, rows.T)
        return float(np.sum(rows.T * x))

    def pool_variance_reduction(self, chosen, i, precision, factor):
        # summed force variance of the pool after adding i: tr(H (P + G_i)^-1)
        after = scipy.linalg.cho_solve(
            scipy.linalg.cho_factor(precision + self.gram[i]), self.pool_gram
        )
        return -float(np.trace(after))

    def pool_oracle(self, chosen, i, precision, factor):
        return -self.pool_rmse(chosen + [i], precision + self.gram[i])

    def test_oracle(self, chosen, i, precision, factor):
        return -self.test_rmse(chosen + [i], precision + self.gram[i])


def greedy(problem: FixedSparseProblem, start: list[int], size: int, score) -> list[int]:
    """Add the structure with the highest ``score(chosen, candidate, precision,
    factor)`` until ``size`` are chosen."""
    chosen = list(start)
    while len(chosen) < size:
        precision = problem.precision(chosen)
        factor = scipy.linalg.cho_factor(precision)
        cand = [i for i in range(len(problem.n_atoms)) if i not in set(chosen)]
        values = [score(chosen, i, precision, factor) for i in cand]
        chosen.append(cand[int(np.argmax(values))])
    return chosen


def _cell(key: str, value: float) -> str:
    if key == "AL needs":
        return f"{'> 80' if np.isnan(value) else f'{value:.0f}':>17}"
    return f"{value:>17.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=40)
    args = parser.parse_args()

    pool = read(args.data_dir / "si_gfn1_train.xyz", ":")
    test = read(args.data_dir / "si_gfn1_test.xyz", ":")
    model = make_model(1, 0)
    soap = model.descriptor.set_params(species=["Si"])
    t0 = time.perf_counter()
    pool_desc = [soap.features_and_derivatives(a) for a in pool]
    test_desc = [soap.features_and_derivatives(a) for a in test]
    every = np.vstack([d.features for d in pool_desc])
    print(f"descriptors: {time.perf_counter() - t0:.0f} s", flush=True)

    rows, curves = [], []
    for seed in args.seeds:
        t0 = time.perf_counter()
        pick = select_sparse_points(every, 200, "cur", np.random.default_rng(seed))
        problem = FixedSparseProblem(model, every[pick], pool, pool_desc, test, test_desc)
        order = [int(i) for i in np.random.default_rng(seed).permutation(len(pool))]
        start = order[:5]

        check = make_model(1, seed).fit(
            [pool[i] for i in order[: args.size]], sparse_points=(every[pick], np.full(200, 14))
        )
        fast = problem.test_rmse(order[: args.size])
        slow = force_rmse(check, test, test_desc)
        assert abs(fast - slow) < 1e-6 * slow, (fast, slow)

        al_80 = greedy(problem, start, 80, problem.local_energy_variance)
        al = al_80[: args.size]  # greedy: the first choices do not depend on the length
        curves.append([problem.test_rmse(al_80[:n]) for n in SIZES])
        al_forces = greedy(problem, start, args.size, problem.force_variance)
        v_optimal = greedy(problem, start, args.size, problem.pool_variance_reduction)
        by_pool = greedy(problem, start, args.size, problem.pool_oracle)
        by_test = greedy(problem, start, args.size, problem.test_oracle)
        row = {
            "seed": seed,
            f"random {args.size}": problem.test_rmse(order[: args.size]),
            f"AL {args.size}": problem.test_rmse(al),
            f"AL forces {args.size}": problem.test_rmse(al_forces),
            f"V-optimal {args.size}": problem.test_rmse(v_optimal),
            f"pool oracle {args.size}": problem.test_rmse(by_pool),
            f"test oracle {args.size}": problem.test_rmse(by_test),
            "random 80": problem.test_rmse(order[:80]),
        }
        row["AL needs"] = next(
            (n for n, v in zip(SIZES, curves[-1], strict=True) if v <= row["random 80"]), np.nan
        )
        rows.append(row)
        print(
            f"seed {seed}: {time.perf_counter() - t0:.0f} s (fast solver = GAPRegressor "
            f"to {abs(fast - slow) / slow:.1e})",
            flush=True,
        )

    keys = list(rows[0])[1:]
    print(
        "\nForce RMSE (eV/Å) on the Si test set, 200 CUR sparse points from the pool, "
        "hyperparameters fixed"
    )
    print(f"{'seed':>6}" + "".join(f"{k:>17}" for k in keys))
    for row in rows:
        print(f"{row['seed']:>6}" + "".join(_cell(k, row[k]) for k in keys))
    print(f"{'mean':>6}" + "".join(_cell(k, np.mean([r[k] for r in rows])) for k in keys))
    mean_curve = np.mean(curves, axis=0)
    target = np.mean([r["random 80"] for r in rows])
    need = next((n for n, v in zip(SIZES, mean_curve, strict=True) if v <= target), None)
    print(
        f"\n'AL needs': labelled structures the AL curve needs to reach random 80 "
        f"(in steps of 5); on the mean curves: {need} ({target:.4f} eV/Å)"
    )


if __name__ == "__main__":
    main()
