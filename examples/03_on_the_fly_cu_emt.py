"""On-the-fly learning of copper from a single structure, with ASE's EMT as reference.

MD runs on the GAP; whenever the largest per-atom force uncertainty exceeds
the threshold, EMT labels the structure, it is written to ``cu_otf.xyz`` and
the model is refitted. At the end the model is tested on an independent EMT
MD trajectory. Needs no extra package. Run: ``python examples/03_on_the_fly_cu_emt.py``.
"""

import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin

from gapkit import SOAP, GAPRegressor
from gapkit.active import OnTheFlyLearner
from gapkit.datasets import make_cu_emt

STEPS = 400
data = Path("cu_otf.xyz")
for path in (data, data.with_suffix(".restart.xyz")):
    path.unlink(missing_ok=True)  # start afresh (keep them to resume instead)

atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
rng = np.random.default_rng(0)
masses = atoms.get_masses()[:, None]
atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(800 * units.kB * masses))

model = GAPRegressor(
    SOAP(r_cut=4.0, n_max=6, l_max=4, sigma=0.5),
    n_sparse=300,
    sigma_energy=0.001,
    sigma_force=0.02,
    sigma_virial=0.02,
    random_state=0,
)
learner = OnTheFlyLearner(model, EMT(), threshold=0.05, data_path=data)
t0 = time.perf_counter()
result = learner.run(
    atoms,
    STEPS,
    timestep=2 * units.fs,
    dynamics=Langevin,
    temperature_K=800,
    friction=0.02,
    fixcm=False,
)
wall = time.perf_counter() - t0

test = [
    a for a in make_cu_emt(12, repeat=(2, 2, 2), kinds=("bulk",), temperatures=(800.0,), seed=7)
]
forces = result.model.predict_forces(test)
rmse = np.sqrt(
    np.mean(
        np.concatenate([(f - a.get_forces()).ravel() for f, a in zip(forces, test, strict=True)])
        ** 2
    )
)
print(
    f"{result.steps} MD steps of 2 fs at 800 K, {result.reference_calls} EMT calls, "
    f"{wall:.0f} s wall"
)
print(f"force RMSE on an independent EMT MD test set (12 x 32 atoms, 800 K): {rmse:.4f} eV/Å")
