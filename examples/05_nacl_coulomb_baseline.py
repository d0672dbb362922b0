"""NaCl (GFN1-xTB labels) fitted with and without a fixed-charge Coulomb baseline.

Both models use the same SOAP cutoff; the second is fitted to the reference
minus the Coulomb energy of fixed charges (smooth PME) and predicts GAP plus
Coulomb. The charges are the mean GFN1-xTB Mulliken charges of the training
set per species (±0.577 e; their spread over all structures is only 0.01 e,
so fixed per-species charges lose little).

Needs the reference data beside the repository (``../shared/data``); pass
another directory as the first argument. Takes a few minutes on 2 cores.
"""

import sys
import time
from pathlib import Path

import numpy as np
from ase.io import read

from gapkit import SOAP, GAPRegressor
from gapkit.electrostatics import PME

data = (
    Path(sys.argv[1])
    if len(sys.argv) > 1
    else (Path(__file__).resolve().parents[2] / "shared" / "data")
)
if not (data / "nacl_gfn1_train.xyz").exists():
    sys.exit(f"NaCl data not found in {data}")
train = read(data / "nacl_gfn1_train.xyz", ":")
test = read(data / "nacl_gfn1_test.xyz", ":")

charges = {}
for element in ("Na", "Cl"):
    q = np.concatenate([a.arrays["xtb_charges"][a.symbols == element] for a in train])
    charges[element] = round(float(q.mean()), 3)
print(f"fixed charges from the mean GFN1-xTB charges: {charges}")

rows = []
for name, baseline in (("GAP", None), ("GAP + Coulomb (PME)", PME(charges=charges))):
    model = GAPRegressor(
        SOAP(r_cut=5.0, n_max=6, l_max=4, sigma=0.5),
        zeta=4,
        n_sparse=300,
        sigma_energy=0.002,
        sigma_force=0.1,
        sigma_virial=0.1,
        baseline=baseline,
        n_jobs=2,
        random_state=0,
    )
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    report = model.evaluate(test)
    by_type = {}
    for ct in ("bulk", "schottky", "slab"):
        subset = [a for a in test if a.info["config_type"] == ct]
        by_type[ct] = model.evaluate(subset)["force_rmse"]
    rows.append((name, report, by_type, fit_s))

print("\nNaCl GFN1-xTB test set (48 structures), r_cut 5 Å, n_max 6, l_max 4, 300 sparse/species")
print(
    f"{'model':<22}{'E meV/atom':>11}{'F eV/Å':>9}{'S meV/Å³':>10}"
    f"{'F bulk':>8}{'F schottky':>11}{'F slab':>8}{'fit s':>7}"
)
for name, r, by_type, fit_s in rows:
    print(
        f"{name:<22}{r['energy_rmse_per_atom'] * 1e3:>11.3f}{r['force_rmse']:>9.4f}"
        f"{r['stress_rmse'] * 1e3:>10.3f}{by_type['bulk']:>8.4f}{by_type['schottky']:>11.4f}"
        f"{by_type['slab']:>8.4f}{fit_s:>7.0f}"
    )
