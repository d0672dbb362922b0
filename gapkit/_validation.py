"""Checks of structures and labels at the public entry points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from .exceptions import InvalidStructureError, MissingLabelError
from .neighbours import neighbour_pairs

#: Two atoms closer than this (Å) are reported as overlapping.
MIN_DISTANCE = 0.3


def check_structures(frames, owner: str) -> list[Atoms]:
    """Return ``frames`` as a list of Atoms after checking each one.

    Raises
    ------
    InvalidStructureError
        Empty data set, an object that is not ``ase.Atoms``, an empty
        structure, NaN or infinite positions, a degenerate periodic cell or
        overlapping atoms; the message names the structure.
    """
    if isinstance(frames, Atoms):
        frames = [frames]
    if not isinstance(frames, Sequence) and not hasattr(frames, "__iter__"):
        raise InvalidStructureError(f"{owner}: expected a list of ase.Atoms; got {type(frames)}.")
    frames = list(frames)
    if not frames:
        raise InvalidStructureError(f"{owner}: the data set is empty (no structures).")
    for k, atoms in enumerate(frames):
        check_atoms(atoms, f"{owner}: structure {k}")
    return frames


def check_atoms(atoms, where: str) -> None:
    """Check one structure; ``where`` prefixes the error message."""
    if not isinstance(atoms, Atoms):
        raise InvalidStructureError(f"{where} is a {type(atoms).__name__}, not an ase.Atoms.")
    if len(atoms) == 0:
        raise InvalidStructureError(f"{where} has no atoms.")
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
        raise InvalidStructureError(
            f"{where} has NaN or infinite positions (atoms {bad[:5].tolist()})."
        )
    pbc = atoms.pbc
    if pbc.any():
        cell = atoms.cell.array
        if not np.all(np.isfinite(cell)):
            raise InvalidStructureError(f"{where} has a NaN or infinite cell.")
        periodic = cell[pbc]
        gram = periodic @ periodic.T
        if np.linalg.det(gram) <= 1e-12 * max(np.trace(gram), 1.0) ** len(periodic):
            raise InvalidStructureError(
                f"{where} is periodic along {''.join('xyz'[i] for i in np.flatnonzero(pbc))} "
                "but its cell vectors there span zero volume (area/length); set a proper "
                "cell or pbc=False."
            )
    i, j, vec, _ = neighbour_pairs(atoms, MIN_DISTANCE)
    if len(i):
        d = np.linalg.norm(vec, axis=1)
        k = int(np.argmin(d))
        raise InvalidStructureError(
            f"{where}: atoms {i[k]} and {j[k]} overlap (distance {d[k]:.3g} Å < "
            f"{MIN_DISTANCE} Å)."
        )


def is_bulk(atoms: Atoms) -> bool:
    """True for a cell periodic in all three directions (stress is defined)."""
    return bool(np.all(atoms.pbc))


class Labels:
    """Reference labels of one structure (``None`` where absent)."""

    __slots__ = ("energy", "forces", "stress")

    def __init__(self, energy=None, forces=None, stress=None):
        self.energy = energy
        self.forces = forces
        self.stress = stress

    @property
    def empty(self) -> bool:
        return self.energy is None and self.forces is None and self.stress is None


def _from_calc(atoms: Atoms, name: str):
    calc = atoms.calc
    if calc is None:
        return None
    results = getattr(calc, "results", {})
    return results.get(name)


def read_labels(
    atoms: Atoms,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> Labels:
    """Find energy, forces and stress of a structure.

    With a key given, ``atoms.info[key]`` (energy, stress) or
    ``atoms.arrays[key]`` (forces) is used. Without, the usual places are
    tried in order: the attached calculator's results (what ``ase.io`` makes
    of extxyz files), then ``info["energy"]``/``arrays["forces"]``/
    ``info["stress"]`` and their ``REF_``/``dft_`` variants.
    """

    def lookup(key, store, name, fallbacks):
        if key is not None:
            return store.get(key)
        value = _from_calc(atoms, name)
        if value is not None:
            return value
        for k in fallbacks:
            if k in store:
                return store[k]
        return None

    energy = lookup(
        energy_key, atoms.info, "energy", ("energy", "REF_energy", "dft_energy", "free_energy")
    )
    if energy is None and energy_key is None:
        energy = _from_calc(atoms, "free_energy")
    forces = lookup(forces_key, atoms.arrays, "forces", ("forces", "REF_forces", "dft_forces"))
    stress = lookup(stress_key, atoms.info, "stress", ("stress", "REF_stress", "dft_stress"))
    virial = atoms.info.get("virial") if stress is None and stress_key is None else None

    if energy is not None:
        energy = float(np.asarray(energy).reshape(()))
    if forces is not None:
        forces = np.asarray(forces, dtype=float).reshape(len(atoms), 3)
    if stress is None and virial is not None and is_bulk(atoms):
        stress = -np.asarray(virial, dtype=float).reshape(3, 3) / atoms.get_volume()
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.size == 9:
            s = stress.reshape(3, 3)
            stress = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        stress = stress.reshape(6)
        if not is_bulk(atoms):
            stress = None
    for name, value in (("energy", energy), ("forces", forces), ("stress", stress)):
        if value is not None and not np.all(np.isfinite(value)):
            raise MissingLabelError(f"the {name} label is NaN or infinite.")
    return Labels(energy, forces, stress)
