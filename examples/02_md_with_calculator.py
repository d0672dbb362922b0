"""Run NVE molecular dynamics and a relaxation with a fitted model as ASE calculator.

Run after ``01_fit_and_evaluate.py`` (which writes ``cu_emt.gap``).
"""

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from gapkit import load

model = load("cu_emt.gap")
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
atoms.rattle(0.05, seed=0)
atoms.calc = model.calculator()

BFGS(atoms, logfile=None).run(fmax=0.01)
print(
    f"relaxed: E = {atoms.get_potential_energy():.4f} eV, "
    f"stress = {np.round(atoms.get_stress() * 1e3, 3)} meV/Å³"
)

rng = np.random.default_rng(0)
masses = atoms.get_masses()[:, None]
atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(600 * units.kB * masses))
dyn = VelocityVerlet(atoms, 1 * units.fs)
start = atoms.get_total_energy()
dyn.run(200)
print(
    f"200 fs of NVE at ~{atoms.get_temperature():.0f} K: total energy changed by "
    f"{(atoms.get_total_energy() - start) / len(atoms) * 1e3:.4f} meV/atom"
)
