"""Checks of structures and labels at the public entry points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from .exceptions import InvalidLabelError, InvalidStructureError, MissingLabelError
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
        _check_cell(atoms.cell.array, pbc, where)
    i, j, vec, _ = neighbour_pairs(atoms, MIN_DISTANCE)
    if len(i):
        d = np.linalg.norm(vec, axis=1)
        k = int(np.argmin(d))
        raise InvalidStructureError(
            f"{where}: atoms {i[k]} and {j[k]} overlap (distance {d[k]:.3g} Å < {MIN_DISTANCE} Å)."
        )


def _check_cell(cell: np.ndarray, pbc: np.ndarray, where: str) -> None:
    """A periodic cell must span a non-zero volume (area, length) in its periodic
    directions. The test is made on the Minkowski-reduced basis, so that long
    (2.5 x 2.5 x 3000 Å) and skewed descriptions of a valid lattice pass."""
    from ase.geometry import minkowski_reduce

    if not np.all(np.isfinite(cell)):
        raise InvalidStructureError(f"{where} has a NaN or infinite cell.")
    axes = "".join("xyz"[i] for i in np.flatnonzero(pbc))
    lengths = np.linalg.norm(cell[pbc], axis=1)
    degenerate = InvalidStructureError(
        f"{where} is periodic along {axes} but its cell vectors there span zero volume "
        "(area/length); set a proper cell or pbc=False."
    )
    raw = cell[pbc] @ cell[pbc].T
    if np.any(lengths <= 1e-8) or np.linalg.det(raw) <= 1e-24 * np.prod(np.diag(raw)):
        raise degenerate
    try:
        with np.errstate(all="raise"):
            reduced, _ = minkowski_reduce(cell, pbc=pbc)
    except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
        raise degenerate from err
    periodic = reduced[pbc]
    gram = periodic @ periodic.T
    # |det| relative to the product of the lengths: 1 for orthogonal vectors
    if np.linalg.det(gram) <= 1e-12 * np.prod(np.diag(gram)):
        raise degenerate


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


_VOIGT_FROM_9 = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _as_array(value, where: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise InvalidLabelError(
            f"{where}: the {what} is not a number or an array of numbers; got "
            f"{type(value).__name__} {str(value)[:40]!r}."
        ) from err
    if not np.all(np.isfinite(arr)):
        raise InvalidLabelError(f"{where}: the {what} is NaN or infinite.")
    return arr


def _voigt(values: np.ndarray, where: str, what: str) -> np.ndarray:
    """A symmetric tensor as 6 Voigt values (xx, yy, zz, yz, xz, xy) from 6 or 9."""
    if values.size == 9:
        s = values.reshape(3, 3)
        return np.array([s[a, b] for a, b in _VOIGT_FROM_9])
    if values.size == 6:
        return values.reshape(6)
    raise InvalidLabelError(
        f"{where}: the {what} must have 6 (Voigt: xx, yy, zz, yz, xz, xy) or 9 (3x3) values; "
        f"got shape {values.shape}."
    )


def read_labels(
    atoms: Atoms,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    *,
    where: str = "the structure",
) -> Labels:
    """Find energy, forces and stress of a structure.

    With a key given, ``atoms.info[key]`` (energy, stress) or
    ``atoms.arrays[key]`` (forces) is used. Without, the usual places are
    tried in order: the attached calculator's results (what ``ase.io`` makes
    of extxyz files), then ``info["energy"]``/``arrays["forces"]``/
    ``info["stress"]`` and their ``REF_``/``dft_`` variants; a virial
    (``info["virial"]``, 3x3 or 6 Voigt values, eV) stands in for a missing
    stress of a bulk cell. Stresses of cells not periodic in three
    directions are dropped.

    Raises
    ------
    InvalidLabelError
        A label that is not numeric, has the wrong shape, or is NaN or
        infinite; the message starts with ``where`` and names the key.
    """

    def lookup(key, store, name, fallbacks):
        if key is not None:
            if key not in store and key == name and _from_calc(atoms, name) is not None:
                # ase.io puts extxyz's energy=/forces=/stress= into the calculator
                return _from_calc(atoms, name), f"calculator result {name!r}"
            return store.get(key), repr(key)
        value = _from_calc(atoms, name)
        if value is not None:
            return value, f"calculator result {name!r}"
        for k in fallbacks:
            if k in store:
                return store[k], repr(k)
        return None, None

    energy, e_key = lookup(
        energy_key, atoms.info, "energy", ("energy", "REF_energy", "dft_energy", "free_energy")
    )
    if energy is None and energy_key is None:
        energy, e_key = _from_calc(atoms, "free_energy"), "calculator result 'free_energy'"
    forces, f_key = lookup(
        forces_key, atoms.arrays, "forces", ("forces", "REF_forces", "dft_forces")
    )
    stress, s_key = lookup(stress_key, atoms.info, "stress", ("stress", "REF_stress", "dft_stress"))
    virial = atoms.info.get("virial") if stress is None and stress_key is None else None

    if energy is not None:
        what = f"energy ({e_key})"
        arr = _as_array(energy, where, what)
        if arr.size != 1:
            raise InvalidLabelError(
                f"{where}: the {what} must be one number; got shape {arr.shape}."
            )
        energy = float(arr.reshape(()))
    if forces is not None:
        what = f"forces ({f_key})"
        forces = _as_array(forces, where, what)
        if forces.size != 3 * len(atoms):
            raise InvalidLabelError(
                f"{where}: the {what} must have shape ({len(atoms)}, 3); got {forces.shape}."
            )
        forces = forces.reshape(len(atoms), 3)
    if stress is not None:
        what = f"stress ({s_key})"
        stress = _voigt(_as_array(stress, where, what), where, what)
    elif virial is not None:
        what = "virial ('virial')"
        v6 = _voigt(_as_array(virial, where, what), where, what)
        if is_bulk(atoms):
            stress = -v6 / atoms.get_volume()
    if stress is not None and not is_bulk(atoms):
        stress = None
    return Labels(energy, forces, stress)


def read_training_labels(frames: Sequence[Atoms], y, keys: tuple, owner: str) -> list[Labels]:
    """Labels of training structures, checked.

    Parameters
    ----------
    frames : list of ase.Atoms
    y : array-like of shape (n_structures,) or None
        Total energies in eV overriding those on the structures.
    keys : tuple of (energy_key, forces_key, stress_key)
    owner : str
        Prefix of the error messages.

    Raises
    ------
    InvalidLabelError
        ``y`` of the wrong length or with non-numeric, NaN or infinite
        values; a label of the wrong shape or type.
    MissingLabelError
        A key given explicitly is found on no structure (a typo would
        otherwise fit with no labels of that kind), or a structure carries
        no label at all.
    """
    energy_key, forces_key, stress_key = keys
    labels = [read_labels(a, *keys, where=f"{owner}: structure {k}") for k, a in enumerate(frames)]
    for key, store, name in (
        (energy_key, "info", "energy"),
        (forces_key, "arrays", "forces"),
        (stress_key, "info", "stress"),
    ):
        if key is not None and not any(
            key in getattr(a, store) or (key == name and _from_calc(a, name) is not None)
            for a in frames
        ):
            seen = sorted({k for a in frames for k in getattr(a, store)})
            raise MissingLabelError(
                f"{owner}: {name}_key={key!r} is not in atoms.{store} of any structure "
                f"(keys found: {', '.join(seen) or 'none'})."
            )
    if y is not None:
        try:
            y = np.asarray(y, dtype=float)
        except (TypeError, ValueError) as err:
            raise InvalidLabelError(f"{owner}: y must be numbers (total energies in eV).") from err
        if y.shape != (len(frames),):
            raise InvalidLabelError(
                f"{owner}: y has shape {y.shape}; expected ({len(frames)},), one total energy "
                "per structure."
            )
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise InvalidLabelError(
                f"{owner}: y[{bad[0]}] (the energy of structure {bad[0]}) is {y[bad[0]]}; "
                f"{len(bad)} value(s) of y are NaN or infinite."
            )
        for lab, e in zip(labels, y, strict=True):
            lab.energy = float(e)
    missing = [k for k, lab in enumerate(labels) if lab.empty]
    if missing:
        raise MissingLabelError(
            f"{owner}: {len(missing)} structure(s) carry no energy, forces or stress (first: "
            f"structure {missing[0]}). Label them, or name the keys with "
            "energy_key/forces_key/stress_key."
        )
    return labels
