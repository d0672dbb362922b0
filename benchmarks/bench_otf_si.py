"""On-the-fly learning of silicon against GFN1-xTB (tblite), scored on the Si test set.

One 64-atom diamond cell (2x2x2 cubic, ``a`` = 5.4339 Å, the unstrained cell
of ``si_gfn1_*.xyz``, rattled by 0.02 Å) runs Langevin MD on the GAP while the thermostat is
ramped linearly from ``--t-start`` to ``--t-end`` (the ``callback`` of
:meth:`gapkit.active.OnTheFlyLearner.run`). Halfway, one atom is removed
(positions and momenta of the others kept) and a second
:class:`~gapkit.active.OnTheFlyLearner` continues on the 63-atom cell with
``initial_data`` = the first run's labelled structures, so that it starts
from what was learnt (its initial fit takes as many sparse points as the
first run ended with). The reference is tblite's ASE calculator,
``TBLite(method="GFN1-xTB")`` with default settings (those of the data set's
labels: ``../shared/data/README.md``), a fresh one for every call.

Printed: reference calls, simulated time, wall time (reference, MD on the
GAP, model updates), the test energy and force RMSE of the final model on
``si_gfn1_test.xyz``, and two curves as text tables: reference calls vs
simulated time, and test force RMSE vs calls (the learner's model right after
every ``--curve-every``-th call, taken from the running calculator; evaluated
after the run, not counted in the wall time). ``--plot PNG`` draws both.
The Langevin noise is seeded (``--seed``): a rerun repeats the trajectory up
to the thread-dependent rounding of the linear algebra.

Needs the ``xtb`` extra (``pip install tblite``)::

    python benchmarks/bench_otf_si.py [--data-dir ../shared/data] [--steps 1000]
        [--timestep-fs 2] [--threshold 0.3] [--n-sparse-add 8] [--plot otf_si.png]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
#: The unstrained cell of the data set (2x2x2 cubic cells of 10.8677 Å).
LATTICE = 5.43385148532734
#: Targets of the issue.
TARGET_RMSE, TARGET_CALLS = 0.080, 60


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--steps", type=int, default=1000, help="MD steps in total (both halves)")
    p.add_argument("--timestep-fs", type=float, default=2.0)
    p.add_argument("--t-start", type=float, default=300.0, help="K")
    p.add_argument("--t-end", type=float, default=2500.0, help="K")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--threshold", type=float, default=0.3, help="eV/Å of calibrated std")
    p.add_argument("--relative", action="store_true", help="threshold in units of sigma_F")
    p.add_argument("--min-interval", type=int, default=15, help="steps between calls")
    p.add_argument("--n-sparse", type=int, default=20, help="sparse points of the first fit")
    p.add_argument("--n-sparse-add", type=int, default=8)
    p.add_argument("--n-max", type=int, default=8)
    p.add_argument("--l-max", type=int, default=6)
    p.add_argument("--r-cut", type=float, default=5.0)
    p.add_argument("--sigma-energy", type=float, default=0.002, help="eV/atom")
    p.add_argument("--sigma-force", type=float, default=0.1, help="eV/Å")
    p.add_argument("--sigma-virial", type=float, default=0.1, help="eV/atom")
    p.add_argument(
        "--strain",
        type=float,
        default=0.0,
        help="amplitude of an isotropic strain cycle (e.g. 0.03: the data set's ±3 %%)",
    )
    p.add_argument("--strain-cycles", type=int, default=1, help="strain cycles per half")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curve-every", type=int, default=5, help="calls between curve points")
    p.add_argument("--test-limit", type=int, default=None, help="first N test structures")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the run files here")
    p.add_argument("--plot", type=Path, default=None, help="write the curves as a PNG")
    return p.parse_args(argv)


class _Timed:
    """Counts the reference calls and their wall time; a fresh TBLite for each."""

    def __init__(self, method: str = "GFN1-xTB"):
        from ase.calculators.calculator import Calculator, all_changes
        from tblite.ase import TBLite

        outer = self

        class Reference(Calculator):
            implemented_properties = ["energy", "free_energy", "forces", "stress"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                work = self.atoms.copy()
                work.calc = TBLite(method=method, verbosity=0)
                t0 = time.perf_counter()
                energy = work.get_potential_energy()
                self.results = {
                    "energy": energy,
                    "free_energy": energy,
                    "forces": work.get_forces(),
                    "stress": work.get_stress(),
                }
                outer.seconds += time.perf_counter() - t0
                outer.calls += 1

        self.calls, self.seconds = 0, 0.0
        self.calculator = Reference()


class _Recorder:
    """The run callback: ramps the thermostat, times the steps, keeps model snapshots."""

    def __init__(self, args, reference: _Timed, offset: int):
        self.args, self.reference, self.offset = args, reference, offset
        self.rows = []  # (global step, target T, instantaneous T, calls so far)
        self.snapshots = []  # (calls, global step, model)
        self.step_seconds = []  # (seconds without reference time, whether a call was made)
        self._version = None
        self._clock = None

    def ramp(self, step: int) -> float:
        a = self.args
        return a.t_start + (a.t_end - a.t_start) * step / a.steps

    def strain(self, step: int) -> float:
        a = self.args
        return a.strain * np.sin(2 * np.pi * a.strain_cycles * step / (a.steps // 2))

    def __call__(self, dyn, step):
        now, ref = time.perf_counter(), self.reference.seconds
        if self._clock is not None:
            seconds = now - self._clock[0] - (ref - self._clock[1])
            self.step_seconds.append((seconds, self.reference.calls != self._clock[2]))
        self._clock = (now, ref, self.reference.calls)
        g = self.offset + step
        dyn.set_temperature(temperature_K=self.ramp(g))
        if self.args.strain:
            side = 2 * LATTICE * (1 + self.strain(g))
            dyn.atoms.set_cell(np.eye(3) * side, scale_atoms=True)
        model = dyn.atoms.calc.model
        if model.fitted_.version != self._version:  # a new model: after a reference call
            self._version = model.fitted_.version
            calls = self.reference.calls
            t_ps = g * self.args.timestep_fs / 1000
            print(
                f"[{now - self.args.t0:6.0f} s] call {calls:3d} at {t_ps:.3f} ps, "
                f"{dyn.atoms.get_temperature():5.0f} K, {len(model.sparse_numbers_)} sparse",
                file=sys.stderr,
                flush=True,
            )
            if calls == 1 or calls % self.args.curve_every == 0:
                self.snapshots.append((calls, g, copy.copy(model)))
        self.rows.append(
            (g, self.ramp(g), dyn.atoms.get_temperature(), self.reference.calls, self.strain(g))
        )


def _errors(model, test):
    res = model.predict_all(test, stress=False)
    de = [(r["energy"] - a.get_potential_energy()) / len(a) for r, a in zip(res, test, strict=True)]
    df = np.concatenate(
        [(r["forces"] - a.get_forces()).ravel() for r, a in zip(res, test, strict=True)]
    )
    return float(np.sqrt(np.mean(np.square(de)))), float(np.sqrt(np.mean(df**2)))


def _model(args, n_sparse: int):
    from gapkit import SOAP, GAPRegressor

    return GAPRegressor(
        SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=0.5),
        zeta=4,
        delta=1.0,
        n_sparse=n_sparse,
        sigma_energy=args.sigma_energy,
        sigma_force=args.sigma_force,
        sigma_virial=args.sigma_virial,
        random_state=args.seed,
    )


def _start(args):
    from ase import units
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=LATTICE, cubic=True).repeat((2, 2, 2))
    # off the perfect lattice, where every force and its std vanish by symmetry
    atoms.rattle(0.02, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(args.t_start * units.kB * masses)
    atoms.set_momenta(momenta - momenta.mean(axis=0))
    return atoms


def run(args, work: Path) -> dict:
    from ase import units
    from ase.io import read
    from ase.md.langevin import Langevin

    from gapkit.active import OnTheFlyLearner

    test = read(args.data_dir / "si_gfn1_test.xyz", ":")[: args.test_limit]
    reference = _Timed()
    rng = np.random.default_rng(args.seed)
    half = args.steps // 2
    md = dict(
        timestep=args.timestep_fs * units.fs,
        dynamics=Langevin,
        temperature_K=args.t_start,
        friction=args.friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    options = dict(
        threshold=args.threshold,
        relative=args.relative,
        min_interval=args.min_interval,
        n_sparse_add=args.n_sparse_add,
        checkpoint_interval=50,
    )
    t0 = args.t0 = time.perf_counter()
    # ---- first half: the perfect 64-atom cell
    first = _Recorder(args, reference, offset=0)
    learner = OnTheFlyLearner(
        _model(args, args.n_sparse), reference.calculator, data_path=work / "perfect.xyz", **options
    )
    r1 = learner.run(_start(args), half, callback=first, **md)
    calls_perfect = reference.calls
    # ---- second half: a vacancy, continuing from the first half's data
    state = read(learner.checkpoint_path)  # positions and momenta at the end
    del state[int(rng.integers(len(state)))]
    initial = read(learner.data_path, ":")
    second = _Recorder(args, reference, offset=half)
    vacancy = OnTheFlyLearner(
        _model(args, len(r1.model.sparse_numbers_)),
        reference.calculator,
        data_path=work / "vacancy.xyz",
        initial_data=initial,
        **options,
    )
    r2 = vacancy.run(state, args.steps - half, callback=second, **md)
    wall = time.perf_counter() - t0

    steps = first.step_seconds + second.step_seconds
    md_only = [s for s, called in steps if not called]
    per_step = float(np.median(md_only)) if md_only else 0.0
    md_seconds = per_step * len(steps)
    snapshots = first.snapshots + [(calls_perfect, half, r1.model)] + second.snapshots
    snapshots.append((reference.calls, args.steps, r2.model))
    seen, curve = set(), []
    for calls, step, model in snapshots:
        if calls in seen:
            continue
        seen.add(calls)
        e, f = _errors(model, test)
        curve.append((calls, step, len(model.sparse_numbers_), e, f))
    scale = r2.model.std_scale_
    return dict(
        calls=reference.calls,
        calls_perfect=calls_perfect,
        ref_seconds=reference.seconds,
        wall=wall,
        md_seconds=md_seconds,
        per_step=per_step,
        update_seconds=wall - reference.seconds - md_seconds,
        rows=first.rows + second.rows,
        curve=sorted(curve),
        n_sparse=len(r2.model.sparse_numbers_),
        std_scale=scale.get("forces") if isinstance(scale, dict) else scale,
        max_std=r1.max_force_std + r2.max_force_std,
        n_test=len(test),
    )


def report(args, out: dict) -> None:
    dt_ps = args.timestep_fs / 1000
    e, f = out["curve"][-1][3:]
    print(
        f"On-the-fly GAP for Si vs GFN1-xTB (tblite): {args.steps} steps of "
        f"{args.timestep_fs:g} fs ({args.steps * dt_ps:.2f} ps), Langevin "
        f"{args.t_start:.0f} -> {args.t_end:.0f} K, vacancy at {args.steps // 2 * dt_ps:.2f} ps"
    )
    print(
        f"model: SOAP(r_cut={args.r_cut:g}, n_max={args.n_max}, l_max={args.l_max}), "
        f"sigma E/F/V = {args.sigma_energy:g}/{args.sigma_force:g}/{args.sigma_virial:g}, "
        f"first fit {args.n_sparse} sparse points, +{args.n_sparse_add} per call; "
        f"threshold {args.threshold:g} "
        + ("x sigma_F" if args.relative else "eV/Å (calibrated std)")
        + f", min_interval {args.min_interval}"
        + (
            f"; isotropic strain {args.strain:+.3f} sin(2 pi {args.strain_cycles} t / t_half)"
            if args.strain
            else ""
        )
    )
    print()
    rows = [
        (
            "reference calls",
            f"{out['calls']} ({out['calls_perfect']} perfect cell, "
            f"{out['calls'] - out['calls_perfect']} with vacancy)",
        ),
        ("simulated time", f"{args.steps * dt_ps:.2f} ps"),
        ("wall time", f"{out['wall']:.0f} s"),
        (
            "  reference (tblite)",
            f"{out['ref_seconds']:.0f} s ({out['ref_seconds'] / max(out['calls'], 1):.1f} s/call)",
        ),
        ("  MD on the GAP", f"{out['md_seconds']:.0f} s ({out['per_step'] * 1e3:.0f} ms/step)"),
        ("  model updates", f"{out['update_seconds']:.0f} s"),
        ("sparse points (final)", f"{out['n_sparse']}"),
        ("force std scale (final)", f"{out['std_scale']:.3g}"),
        (f"test energy RMSE ({out['n_test']})", f"{e * 1e3:.1f} meV/atom"),
        (f"test force RMSE ({out['n_test']})", f"{f:.4f} eV/Å"),
        (
            "target",
            f"force RMSE <= {TARGET_RMSE} eV/Å with <= {TARGET_CALLS} calls: "
            + ("met" if f <= TARGET_RMSE and out["calls"] <= TARGET_CALLS else "NOT met"),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")

    print("\nreference calls vs simulated time")
    print(
        f"{'t / ps':>7} {'T set / K':>10} {'T MD / K':>9} {'strain':>7} {'max std':>8} {'calls':>6}"
    )
    every = max(1, round(0.2 / dt_ps))
    max_std = out["max_std"]
    for g, t_set, t_md, calls, strain in out["rows"]:
        if g % every == 0 or g == args.steps:
            std = max_std[g - 1] if 0 < g <= len(max_std) else float("nan")
            print(f"{g * dt_ps:7.2f} {t_set:10.0f} {t_md:9.0f} {strain:7.3f} {std:8.3f} {calls:6d}")

    print("\ntest RMSE vs reference calls")
    print(f"{'calls':>6} {'t / ps':>7} {'sparse':>7} {'E / meV/at':>11} {'F / eV/Å':>9}")
    for calls, step, m, e, f in out["curve"]:
        print(f"{calls:6d} {step * dt_ps:7.2f} {m:7d} {e * 1e3:11.2f} {f:9.4f}")


def plot(args, out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dt_ps = args.timestep_fs / 1000
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    g = np.array([r[0] for r in out["rows"]])
    ax1.step(g * dt_ps, [r[3] for r in out["rows"]], where="post", color="C0")
    ax1.axvline(args.steps // 2 * dt_ps, color="grey", ls=":", label="vacancy")
    ax1.set_xlabel("simulated time / ps")
    ax1.set_ylabel("reference calls", color="C0")
    ax1.legend(loc="upper left")
    twin = ax1.twinx()
    twin.plot(g * dt_ps, [r[2] for r in out["rows"]], color="C3", lw=0.5, alpha=0.6)
    twin.plot(g * dt_ps, [r[1] for r in out["rows"]], color="C3", lw=1)
    twin.set_ylabel("temperature / K (set, MD)", color="C3")
    calls = [c[0] for c in out["curve"]]
    ax2.plot(calls, [c[4] for c in out["curve"]], "o-")
    ax2.axhline(TARGET_RMSE, color="grey", ls="--", label=f"{TARGET_RMSE} eV/Å")
    ax2.axvline(TARGET_CALLS, color="grey", ls=":", label=f"{TARGET_CALLS} calls")
    ax2.set_xlabel("reference calls")
    ax2.set_ylabel("test force RMSE / eV/Å")
    ax2.set_yscale("log")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        print("bench_otf_si needs tblite: pip install tblite (the xtb extra)", file=sys.stderr)
        return 1
    if not (args.data_dir / "si_gfn1_test.xyz").exists():
        print(f"no si_gfn1_test.xyz in {args.data_dir} (--data-dir)", file=sys.stderr)
        return 1
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        for name in ("perfect.xyz", "vacancy.xyz"):
            if (args.work_dir / name).exists():
                print(f"{args.work_dir / name} exists: a run must start afresh", file=sys.stderr)
                return 1
        out = run(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = run(args, Path(tmp))
    report(args, out)
    if args.plot is not None:
        plot(args, out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
