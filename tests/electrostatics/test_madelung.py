"""Madelung constants and the charged-cell reference, from Ewald and PME.

Each crystal is built with unit nearest-neighbour distance d (or lattice
constant a for CaF₂), scaled, and optionally rotated; the energy per formula
unit is ``-k_e M / d`` (``-k_e M / a`` for CaF₂ with charges +2, -1, -1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.units import Bohr, Hartree

from gapkit.electrostatics import PME, Ewald
from gapkit.exceptions import NonNeutralWarning
from gapkit.units import COULOMB_CONSTANT


def _rocksalt():
    return bulk("NaCl", "rocksalt", a=2.0), 1.7475645946332, 1  # d = a/2


def _cesium_chloride():
    return bulk("CsCl", "cesiumchloride", a=2.0 / math.sqrt(3.0)), 1.7626747730710, 1


def _zinc_blende():
    return bulk("ZnS", "zincblende", a=4.0 / math.sqrt(3.0)), 1.6380550533888, 1


def _wurtzite():
    # ideal: c/a = sqrt(8/3), u = 3/8, nearest-neighbour distance u c = 1
    c = 1.0 / 0.375
    a = c / math.sqrt(8.0 / 3.0)
    return bulk("ZnO", "wurtzite", a=a, c=c, u=0.375), 1.6413216273719, 2


def _fluorite():
    return bulk("CaF2", "fluorite", a=1.0), 11.636575227077, 1


CRYSTALS = {
    "NaCl": _rocksalt,
    "CsCl": _cesium_chloride,
    "zincblende": _zinc_blende,
    "wurtzite": _wurtzite,
    "CaF2": _fluorite,
}
CHARGES = {"Na": 1.0, "Cl": -1.0, "Cs": 1.0, "Zn": 1.0, "S": -1.0, "O": -1.0, "Ca": 2.0, "F": -1.0}


def _rotation(seed):
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _prepare(name, scale, rotate):
    atoms, madelung, n_formula = CRYSTALS[name]()
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    if rotate:
        rot = _rotation(7)
        atoms.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    reference = -COULOMB_CONSTANT * madelung / scale * n_formula
    return atoms, reference


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.7])
@pytest.mark.parametrize("name", list(CRYSTALS))
def test_madelung_ewald(name, scale, rotate):
    atoms, reference = _prepare(name, scale, rotate)
    atoms.calc = Ewald(charges=CHARGES, accuracy=1e-11)
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(reference, rel=1e-9)
    if name != "wurtzite":  # cubic crystals: every atom is a centre of symmetry
        assert np.abs(atoms.get_forces()).max() < 1e-8 * abs(reference)


@pytest.mark.parametrize("order", [4, 6, 8])
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.7])
@pytest.mark.parametrize("name", list(CRYSTALS))
def test_madelung_pme(name, scale, rotate, order):
    accuracy = 1e-6
    atoms, reference = _prepare(name, scale, rotate)
    atoms.calc = PME(charges=CHARGES, accuracy=accuracy, order=order)
    energy = atoms.get_potential_energy()
    # the energy error per atom stays below accuracy * k_e * (1 Å) in these units
    assert abs(energy - reference) / len(atoms) < accuracy * COULOMB_CONSTANT
    if name != "wurtzite":
        rms = np.sqrt(np.mean(np.sum(atoms.get_forces() ** 2, axis=1)))
        assert rms < accuracy * COULOMB_CONSTANT


@pytest.mark.parametrize("method", [Ewald, PME])
def test_single_charge_in_cube(method):
    """One +1 charge in a cube of 16 bohr with a neutralising background."""
    length = 16.0 * Bohr
    atoms = Atoms("H", positions=[[1.0, 2.0, 3.0]], cell=np.eye(3) * length, pbc=True)
    atoms.calc = method(charges=[1.0], accuracy=1e-9)
    with pytest.warns(NonNeutralWarning, match="net charge Q = 1 e"):
        energy = atoms.get_potential_energy()
    assert energy / Hartree == pytest.approx(-0.088665546, rel=2e-8)


@pytest.mark.parametrize("method", [Ewald, PME])
def test_charged_cell_energy_independent_of_alpha(method):
    atoms = bulk("NaCl", "rocksalt", a=5.0, cubic=True)
    atoms.rattle(0.1, seed=3)
    energies = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonNeutralWarning)
        for alpha in (0.5, 0.8):
            atoms.calc = method(charges={"Na": 1.0, "Cl": -0.5}, accuracy=1e-9, alpha=alpha)
            energies.append(atoms.get_potential_energy())
    assert energies[0] == pytest.approx(energies[1], rel=1e-8)
