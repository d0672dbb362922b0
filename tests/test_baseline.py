"""A Coulomb baseline under the GAP: fitted to the residual, added back, saved."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import small_soap

from gapkit import GAPRegressor, load
from gapkit.config import build_model
from gapkit.electrostatics import Ewald

CHARGES = {"Na": 0.8, "Cl": -0.8}


class ShortRange(Calculator):
    """A smooth short-ranged repulsion between all pairs (r < 3.5 Å)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from ase.neighborlist import neighbor_list

        i, j, d, vec = neighbor_list("ijdD", self.atoms, 3.5)
        rc = 3.5
        e = 2.0 * (1 - d / rc) ** 4 / d
        de = 2.0 * (-4 * (1 - d / rc) ** 3 / rc / d - (1 - d / rc) ** 4 / d**2)
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, (de / d)[:, None] * vec)
        self.results = {"energy": 0.5 * e.sum(), "forces": forces}


def _reference(atoms):
    ewald = Ewald(charges=CHARGES, accuracy=1e-8)
    a = atoms.copy()
    a.calc = ewald
    e, f = a.get_potential_energy(), a.get_forces()
    a.calc = ShortRange()
    e, f = e + a.get_potential_energy(), f + a.get_forces()
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=e, forces=f)
    return out


@pytest.fixture(scope="module")
def nacl_frames():
    frames = []
    for k in range(10):
        atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
        atoms.set_cell(atoms.cell.array * (1 + 0.03 * np.sin(k)), scale_atoms=True)
        atoms.rattle(0.12, seed=k)
        frames.append(_reference(atoms))
    return frames


def test_baseline_improves_a_short_cutoff_model(nacl_frames):
    train, test = nacl_frames[:7], nacl_frames[7:]
    soap = small_soap(r_cut=3.0, n_max=4, l_max=3)
    plain = GAPRegressor(soap, n_sparse=30, random_state=0).fit(train)
    based = GAPRegressor(
        soap, n_sparse=30, random_state=0, baseline=Ewald(charges=CHARGES, accuracy=1e-8)
    ).fit(train)
    err_plain = plain.evaluate(test)["force_rmse"]
    err_based = based.evaluate(test)["force_rmse"]
    assert err_based < 0.5 * err_plain
    # prediction = GAP part + baseline
    a = test[0].copy()
    a.calc = Ewald(charges=CHARGES, accuracy=1e-8)
    coulomb = a.get_potential_energy()
    # the GAP part alone: the fitted model without its baseline
    gap_only = based.fitted_.replace(baseline=None)
    (without,) = gap_only.predict([test[0]], forces=False, stress=False)
    assert based.predict([test[0]])[0] == pytest.approx(without["energy"] + coulomb, abs=1e-9)
    # the baseline is part of the fitted model: set_params does not change a prediction
    before = based.predict([test[0]])[0]
    based.set_params(baseline=None)
    assert based.predict([test[0]])[0] == before


def test_baseline_forces_and_round_trip(nacl_frames, tmp_path):
    from ase.calculators.fd import calculate_numerical_forces

    model = GAPRegressor(
        small_soap(r_cut=3.0, n_max=4, l_max=3),
        n_sparse=20,
        random_state=0,
        baseline=Ewald(charges=CHARGES),
    ).fit(nacl_frames[:4])
    atoms = nacl_frames[5].copy()
    atoms.calc = model.calculator()
    forces = atoms.get_forces()
    assert np.abs(forces - calculate_numerical_forces(atoms, 1e-4)).max() < 1e-5
    path = tmp_path / "nacl.gap"
    model.save(path)
    loaded = load(path)
    assert loaded.baseline.todict() == model.baseline.todict()
    np.testing.assert_array_equal(loaded.predict(nacl_frames[5:7]), model.predict(nacl_frames[5:7]))


def test_baseline_in_config():
    model = build_model({"baseline": {"class": "PME", "charges": CHARGES, "accuracy": 1e-5}})
    assert type(model.baseline).__name__ == "PME"
