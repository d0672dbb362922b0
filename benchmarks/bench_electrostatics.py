"""Energy + forces time and force error of gapkit's PME and Ewald (and peers) on NaCl.

Systems: rattled NaCl supercells (the 8-atom cubic cell repeated n³ times, 0.1 Å
rattle), charges ±1. For every system and method the table gives the wall time
of one energy + forces evaluation (best of ``--repeats``, after a warm-up call,
so numba compilation and first-touch costs are excluded), and the RMS error of
the force vectors, ``sqrt(<|F - F_ref|²>)`` in eV/Å, against a tight reference
(gapkit PME at accuracy 1e-8 with order 8, itself checked against the direct
Ewald sum on the smallest system).

Peers, when installed, run in the same process on the same systems:

* torch-pme (``PMECalculator`` with its ``tune_pme``, run once on the first
  system and reused, since it times many settings; the half neighbour list is
  built once outside the timed region; forces by autograd; a single call when
  the first takes over 5 s);
* OpenMM (CPU platform, ``NonbondedForce.PME`` with ``ewaldErrorTolerance``,
  cutoff 1 nm).

Usage::

    python benchmarks/bench_electrostatics.py --threads 2 --sizes 5 11 23
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
        "--sizes",
        type=int,
        nargs="+",
        default=[5, 11, 23],
        help="repetitions n of the 8-atom cubic NaCl cell (N = 8 n³)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy", type=float, default=1e-5)
    parser.add_argument(
        "--extra-accuracies",
        type=float,
        nargs="*",
        default=[1e-6],
        help="further gapkit PME accuracies (to match the peers' errors)",
    )
    parser.add_argument(
        "--ewald-max-atoms",
        type=int,
        default=11000,
        help="largest system timed with the direct Ewald sum",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip torch-pme and OpenMM")
    parser.add_argument("--openmm-tolerances", type=float, nargs="+", default=[1e-5, 1e-6])
    parser.add_argument("--torchpme-accuracies", type=float, nargs="+", default=[1e-5])
    parser.add_argument(
        "--torchpme-max-atoms",
        type=int,
        default=20000,
        help="largest system run with torch-pme (it is slow on CPU)",
    )
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numba / torch start
    os.environ.setdefault("NUMBA_NUM_THREADS", str(ARGS.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

from gapkit.electrostatics import PME, Ewald  # noqa: E402
from gapkit.units import COULOMB_CONSTANT  # noqa: E402

CHARGES = {"Na": 1.0, "Cl": -1.0}


def nacl(n, seed=0):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(n)
    atoms.rattle(0.1, seed=seed)
    atoms.set_initial_charges(np.where(atoms.numbers == 11, 1.0, -1.0))
    return atoms


def best_time(fn, repeats, slow=None):
    """Best of ``repeats`` timed calls after a warm-up call.

    When ``slow`` is given and the warm-up takes longer than that many seconds,
    the warm-up time is returned instead (one call only).
    """
    t0 = time.perf_counter()
    out = fn()  # warm-up
    first = time.perf_counter() - t0
    if slow is not None and first > slow:
        return first, out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def rms(f, g):
    return float(np.sqrt(np.mean(np.sum((f - g) ** 2, axis=1))))


def gapkit_run(calc, atoms):
    def fn():
        calc.reset()
        calc.calculate(atoms, ["energy", "forces"])
        return calc.results["forces"].copy()

    return fn


# ------------------------------------------------------------------ peers


_TORCHPME_TUNED = {}


def torchpme_runs(atoms, accuracies, threads, repeats):
    try:
        import torch
        import torchpme
        from scipy.spatial import cKDTree
        from torchpme.tuning import tune_pme
    except ImportError:
        return []
    torch.set_num_threads(threads)
    dtype = torch.float64
    cutoff = 8.0
    box = np.diag(atoms.cell.array)
    pos_np = atoms.positions % box
    tree = cKDTree(pos_np, boxsize=box)  # cubic cells only
    t0 = time.perf_counter()
    pairs = tree.query_pairs(cutoff, output_type="ndarray")
    t_nl = time.perf_counter() - t0
    diff = pos_np[pairs[:, 1]] - pos_np[pairs[:, 0]]
    shifts = -np.round(diff / box)
    charges = torch.tensor(atoms.get_initial_charges(), dtype=dtype).reshape(-1, 1)
    cell = torch.tensor(atoms.cell.array, dtype=dtype)
    idx = torch.tensor(pairs, dtype=torch.int64)
    shift_t = torch.tensor(shifts, dtype=dtype) @ cell
    rows = []
    for acc in accuracies:
        positions = torch.tensor(pos_np, dtype=dtype)
        dist = torch.linalg.norm(positions[idx[:, 1]] - positions[idx[:, 0]] + shift_t, dim=1)
        if acc not in _TORCHPME_TUNED:
            # tune_pme times many candidate settings; it is run once, on the first
            # (smallest) system, and its settings (absolute mesh spacing, smearing,
            # nodes) are reused for the larger systems of the same density
            t0 = time.perf_counter()
            smearing, params, _ = tune_pme(
                charges,
                cell,
                positions,
                cutoff,
                idx,
                dist,
                prefactor=torchpme.prefactors.eV_A,
                accuracy=acc,
            )
            _TORCHPME_TUNED[acc] = (smearing, params, time.perf_counter() - t0, len(atoms))
        smearing, params, t_tune, n_tuned = _TORCHPME_TUNED[acc]
        potential = torchpme.CoulombPotential(smearing=smearing, prefactor=torchpme.prefactors.eV_A)
        calc = torchpme.PMECalculator(potential, **params)
        calc.to(dtype=dtype)

        def fn(positions_np=pos_np, calc=calc):
            pos = torch.tensor(positions_np, dtype=dtype, requires_grad=True)
            d = torch.linalg.norm(pos[idx[:, 1]] - pos[idx[:, 0]] + shift_t, dim=1)
            pot = calc.forward(charges, cell, pos, idx, d)
            energy = (charges * pot).sum()
            energy.backward()
            return -pos.grad.numpy().copy()

        seconds, forces = best_time(fn, repeats, slow=5.0)
        rows.append(
            (
                f"torch-pme {torchpme.__version__} acc={acc:g}",
                seconds,
                forces,
                f"rc={cutoff} smearing={smearing:.3f} {params} "
                f"(neighbour list {t_nl:.2f} s, tune_pme {t_tune:.0f} s on "
                f"N={n_tuned}; not timed)",
            )
        )
    return rows


def openmm_runs(atoms, tolerances, threads, repeats):
    try:
        import openmm
        from openmm import unit
    except ImportError:
        return []
    kj_per_mol_nm_to_ev_per_a = 1.0 / 96.48533212331 / 10.0
    rows = []
    for tol in tolerances:
        system = openmm.System()
        box = atoms.cell.array / 10.0
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*v) for v in box))
        force = openmm.NonbondedForce()
        force.setNonbondedMethod(openmm.NonbondedForce.PME)
        force.setCutoffDistance(1.0)
        force.setEwaldErrorTolerance(tol)
        force.setUseDispersionCorrection(False)
        for q in atoms.get_initial_charges():
            system.addParticle(23.0)
            force.addParticle(float(q), 0.3, 0.0)
        system.addForce(force)
        integrator = openmm.VerletIntegrator(0.001)
        platform_ = openmm.Platform.getPlatformByName("CPU")
        context = openmm.Context(system, integrator, platform_, {"Threads": str(threads)})
        positions = atoms.positions / 10.0

        def fn(context=context, positions=positions):
            context.setPositions(positions)
            state = context.getState(getEnergy=True, getForces=True)
            f = state.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer
            )
            return np.asarray(f) * kj_per_mol_nm_to_ev_per_a

        seconds, forces = best_time(fn, repeats)
        alpha, nx, ny, nz = force.getPMEParametersInContext(context)
        rows.append(
            (
                f"OpenMM {openmm.__version__} CPU tol={tol:g}",
                seconds,
                forces,
                f"rc=10.0 alpha={alpha / 10:.3f}/Å mesh=({nx},{ny},{nz}) (float32)",
            )
        )
    return rows


# ------------------------------------------------------------------ main


def main(args):
    import numba
    import scipy

    print(
        f"# gapkit electrostatics benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, threads={args.threads} (numba "
        f"{numba.get_num_threads()}), python {sys.version.split()[0]}, numpy "
        f"{np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}"
    )
    try:
        print(f"# load average at start: {os.getloadavg()}")
    except OSError:
        pass
    print(
        f"# accuracy={args.accuracy:g} → target RMS force error "
        f"{args.accuracy * COULOMB_CONSTANT:.2e} eV/Å; best of {args.repeats}"
    )
    header = f"{'N':>7}  {'method':<34} {'time (s)':>9}  {'RMS dF (eV/Å)':>13}  parameters"
    print(header)
    print("-" * len(header))
    pme_times = []
    for n in args.sizes:
        atoms = nacl(n)
        natoms = len(atoms)
        reference = PME(charges=CHARGES, accuracy=1e-8, order=8)
        _, f_ref = best_time(gapkit_run(reference, atoms), 1)
        ref_note = f"reference: PME acc=1e-8 p=8 {reference.tuned_.mesh}"
        if natoms <= 1100:
            ewald_ref = Ewald(charges=CHARGES, accuracy=1e-10)
            _, f_ewald = best_time(gapkit_run(ewald_ref, atoms), 1)
            ref_note += f"; vs Ewald acc=1e-10: RMS dF {rms(f_ref, f_ewald):.1e} eV/Å"
        print(f"{natoms:>7}  ({ref_note})")
        rows = []
        calc = PME(charges=CHARGES, accuracy=args.accuracy)
        seconds, forces = best_time(gapkit_run(calc, atoms), args.repeats)
        t = calc.tuned_
        pme_times.append((natoms, seconds))
        rows.append(
            (
                f"gapkit PME acc={args.accuracy:g}",
                seconds,
                forces,
                f"p={t.order} rc={t.cutoff:g} alpha={t.alpha:.3f} mesh={t.mesh}",
            )
        )
        for acc in args.extra_accuracies:
            calc = PME(charges=CHARGES, accuracy=acc)
            seconds, forces = best_time(gapkit_run(calc, atoms), args.repeats)
            t = calc.tuned_
            rows.append(
                (
                    f"gapkit PME acc={acc:g}",
                    seconds,
                    forces,
                    f"p={t.order} rc={t.cutoff:g} alpha={t.alpha:.3f} mesh={t.mesh}",
                )
            )
        if natoms <= args.ewald_max_atoms:
            calc = Ewald(charges=CHARGES, accuracy=args.accuracy)
            seconds, forces = best_time(
                gapkit_run(calc, atoms), 1 if natoms > 5000 else args.repeats
            )
            t = calc.tuned_
            rows.append(
                (
                    f"gapkit Ewald acc={args.accuracy:g}",
                    seconds,
                    forces,
                    f"rc={t.cutoff:.2f} alpha={t.alpha:.3f} kcut={t.kcutoff:.3f}/Å",
                )
            )
        if not args.no_peers:
            if natoms <= args.torchpme_max_atoms:
                rows += torchpme_runs(atoms, args.torchpme_accuracies, args.threads, args.repeats)
            else:
                print(f"{natoms:>7}  torch-pme skipped (N > --torchpme-max-atoms)")
            rows += openmm_runs(atoms, args.openmm_tolerances, args.threads, args.repeats)
        for name, seconds, forces, note in rows:
            print(
                f"{natoms:>7}  {name:<34} {seconds:>9.3f}  {rms(forces, f_ref):>13.2e}  {note}",
                flush=True,
            )
    if len(pme_times) >= 2:
        n_arr = np.log([n for n, _ in pme_times])
        t_arr = np.log([t for _, t in pme_times])
        slope = np.polyfit(n_arr, t_arr, 1)[0]
        print(
            f"# gapkit PME time ∝ N^{slope:.2f} over N = {pme_times[0][0]} … "
            f"{pme_times[-1][0]} (target ≤ 1.15)"
        )
    try:
        print(f"# load average at end: {os.getloadavg()}")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
