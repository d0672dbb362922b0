"""Fit a GAP to the bundled copper/EMT data, evaluate it and save it.

Run: ``python examples/01_fit_and_evaluate.py`` (about 20 s on 2 cores).
"""

from gapkit import SOAP, GAPRegressor, load
from gapkit.datasets import load_cu_emt

train, test = load_cu_emt()
model = GAPRegressor(
    SOAP(r_cut=4.0, n_max=6, l_max=4, sigma=0.5),
    zeta=4,
    n_sparse=200,
    sigma_energy=0.001,  # EMT labels are noise-free: tighter than GAP's DFT defaults
    sigma_force=0.03,
    sigma_virial=0.02,
    random_state=0,
)
model.fit(train)
print(model.evaluate(test))

model.save("cu_emt.gap")
again = load("cu_emt.gap")
assert (again.predict(test) == model.predict(test)).all()
print("saved to cu_emt.gap and read back with identical predictions")
