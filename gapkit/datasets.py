"""Small labelled data sets made with ASE's EMT potential (no extra dependency).

``python -m gapkit.datasets`` rewrites the bundled copper files
``gapkit/data/cu_emt_train.xyz`` and ``cu_emt_test.xyz``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin

try:  # ASE >= 3.28
    from ase.md.velocitydistribution import thermalize_momenta as _thermalize
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _thermalize

__all__ = ["make_cu_emt", "load_cu_emt"]

KINDS = ("bulk", "vacancy", "surface")


def _start(kind: str, repeat: tuple[int, int, int], rng: np.random.Generator) -> Atoms:
    if kind == "surface":
        atoms = fcc100("Cu", size=(repeat[0], repeat[1], max(2, 2 * repeat[2])), vacuum=6.0)
        atoms.pbc = (True, True, False)
        return atoms
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    strain = np.eye(3) + np.diag(rng.uniform(-0.02, 0.02, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    if kind == "vacancy":
        del atoms[int(rng.integers(len(atoms)))]
    return atoms


def make_cu_emt(
    n_structures: int,
    *,
    repeat: tuple[int, int, int] = (3, 3, 3),
    temperatures: tuple[float, ...] = (300.0, 800.0, 1300.0),
    kinds: tuple[str, ...] = KINDS,
    snapshots_per_run: int = 5,
    steps_between: int = 20,
    seed: int = 0,
) -> list[Atoms]:
    """Copper structures from Langevin MD with EMT, labelled with EMT.

    Each run starts from a fresh (strained bulk, bulk with a vacancy, or
    (100) slab) cell at one of ``temperatures``, equilibrates for
    ``5 * steps_between`` steps of 2 fs and keeps ``snapshots_per_run``
    snapshots ``steps_between`` steps apart. With the default ``repeat`` a
    bulk cell has 108 atoms.

    Parameters
    ----------
    n_structures : int
        Number of structures returned.

    Returns
    -------
    list of ase.Atoms
        With energy, forces and (bulk cells) stress in a
        ``SinglePointCalculator``, and ``info["config_type"]`` set to
        ``"<kind>_T<temperature>"``.
    """
    rng = np.random.default_rng(seed)
    frames: list[Atoms] = []
    run = 0
    while len(frames) < n_structures:
        kind = kinds[run % len(kinds)]
        temp = temperatures[(run // len(kinds)) % len(temperatures)]
        atoms = _start(kind, repeat, rng)
        atoms.calc = EMT()
        _thermalize(atoms, temperature_K=temp, rng=rng)
        dyn = Langevin(atoms, 2 * units.fs, temperature_K=temp, friction=0.02, fixcm=False, rng=rng)
        dyn.run(5 * steps_between)
        for _ in range(snapshots_per_run):
            dyn.run(steps_between)
            frames.append(_labelled_copy(atoms, f"{kind}_T{int(temp)}"))
            if len(frames) == n_structures:
                break
        run += 1
    return frames


def _labelled_copy(atoms: Atoms, config_type: str) -> Atoms:
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if all(atoms.pbc):
        results["stress"] = atoms.get_stress()
    out.calc = SinglePointCalculator(out, **results)
    out.info["config_type"] = config_type
    return out


def load_cu_emt() -> tuple[list[Atoms], list[Atoms]]:
    """The bundled copper/EMT data set: (train, test) lists of labelled Atoms.

    60 training and 20 test structures of 32 atoms (31 with a vacancy, 32 in
    a slab), made by :func:`make_cu_emt` with ``repeat=(2, 2, 2)``.
    """
    from ase.io import read

    files = resources.files("gapkit") / "data"
    with resources.as_file(files / "cu_emt_train.xyz") as p:
        train = read(p, ":")
    with resources.as_file(files / "cu_emt_test.xyz") as p:
        test = read(p, ":")
    return train, test


def _write_bundled(directory: Path) -> None:
    from ase.io import write

    train = make_cu_emt(60, repeat=(2, 2, 2), seed=1)
    test = make_cu_emt(20, repeat=(2, 2, 2), seed=2)
    write(directory / "cu_emt_train.xyz", train)
    write(directory / "cu_emt_test.xyz", test)


if __name__ == "__main__":
    _write_bundled(Path(__file__).parent / "data")
