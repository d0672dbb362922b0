"""GAPCalculator: ASE properties, caching, MD and optimisation."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculatorSetupError, PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from gapkit import GAPCalculator


def test_properties_agree_with_estimator(cu_model, cu_data):
    atoms = cu_data[1][0].copy()
    atoms.calc = GAPCalculator(cu_model)
    assert atoms.get_potential_energy() == pytest.approx(cu_model.predict([atoms])[0])
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), cu_model.predict_forces([atoms])[0])
    np.testing.assert_allclose(atoms.get_stress(), cu_model.predict_stress([atoms])[0])
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())


def test_caching_and_recalculation(cu_model, cu_data):
    atoms = cu_data[1][0].copy()
    atoms.calc = cu_model.calculator()
    e1 = atoms.get_potential_energy()
    assert not atoms.calc.calculation_required(atoms, ["energy", "forces", "stress"])
    atoms.positions[0, 0] += 0.05
    assert atoms.calc.calculation_required(atoms, ["energy"])
    assert atoms.get_potential_energy() != e1


def test_stress_needs_bulk_and_species_are_checked(cu_model):
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = (True, True, False)
    slab.calc = cu_model.calculator()
    slab.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        slab.get_stress()
    water = molecule("H2O")
    water.calc = cu_model.calculator()
    with pytest.raises(CalculatorSetupError, match="H, O"):
        water.get_potential_energy()


def test_nve_md_conserves_energy(cu_model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=0)
    atoms.calc = cu_model.calculator()
    rng = np.random.default_rng(0)
    atoms.set_momenta(
        rng.normal(0, np.sqrt(300 * units.kB * atoms.get_masses()[:, None]), (len(atoms), 3))
    )
    dyn = VelocityVerlet(atoms, 1 * units.fs)
    totals = []
    for _ in range(40):
        dyn.run(1)
        totals.append(atoms.get_total_energy())
    totals = np.array(totals) / len(atoms)
    assert np.ptp(totals) < 2e-4  # eV/atom over 40 fs at ~300 K
    assert atoms.get_kinetic_energy() > 0


def test_geometry_optimisation_reduces_forces(cu_model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.08, seed=4)
    atoms.calc = cu_model.calculator()
    f0 = np.abs(atoms.get_forces()).max()
    e0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
    assert np.abs(atoms.get_forces()).max() < 0.01 < f0
    assert atoms.get_potential_energy() < e0
