"""On-the-fly learning: reference calls, files on disk, resume after a crash."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read
from conftest import small_soap

from gapkit import GAPRegressor
from gapkit.active import OnTheFlyLearner


class CountingEMT(EMT):
    """EMT that counts its calculations and can fail on a given call."""

    def __init__(self, fail_on: int | None = None):
        super().__init__()
        self.calls = 0
        self.fail_on = fail_on

    def calculate(self, atoms=None, properties=None, system_changes=None):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise RuntimeError("simulated crash of the reference code")
        super().calculate(atoms, properties or ["energy"], system_changes or [])


def _start():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.02, seed=1)
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(900 * units.kB * masses))
    return atoms


def _model():
    return GAPRegressor(small_soap(r_cut=3.0, n_max=3, l_max=2), n_sparse=40,
                        sigma_energy=0.001, sigma_force=0.02, sigma_virial=0.02,
                        random_state=0)


def test_reference_calls_are_written_before_use(tmp_path):
    ref = CountingEMT()
    learner = OnTheFlyLearner(_model(), ref, threshold=0.05, data_path=tmp_path / "d.xyz")
    result = learner.run(_start(), 40, timestep=2 * units.fs)
    assert result.steps == 40
    assert 2 <= result.reference_calls == result.n_labelled
    frames = read(tmp_path / "d.xyz", ":")
    assert len(frames) == result.reference_calls
    for atoms in frames:  # real reference labels of exactly these structures
        expected = atoms.copy()
        expected.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(expected.get_potential_energy())
        np.testing.assert_allclose(atoms.get_forces(), expected.get_forces(), atol=1e-6)
    # after the last update the model is confident along the trajectory
    assert min(result.max_force_std[-5:]) < 0.05 * 3


def test_resume_after_crash_repeats_no_reference_call(tmp_path):
    data = tmp_path / "d.xyz"
    crashing = CountingEMT(fail_on=2)
    learner = OnTheFlyLearner(_model(), crashing, threshold=0.05, data_path=data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        learner.run(_start(), 60, timestep=2 * units.fs)
    saved = read(data, ":")
    assert len(saved) == 1  # the call that finished is on disk
    steps_saved = [a.info["otf_step"] for a in saved]

    fresh = CountingEMT()
    resumed = OnTheFlyLearner(_model(), fresh, threshold=0.05, data_path=data)
    result = resumed.run(_start(), 60, timestep=2 * units.fs)
    frames = read(data, ":")
    assert result.steps == 60
    assert len(frames) == 1 + result.reference_calls == result.n_labelled
    assert fresh.calls == result.reference_calls  # nothing recomputed
    steps = [a.info["otf_step"] for a in frames]
    assert steps[:1] == steps_saved and len(set(steps)) == len(steps)  # no duplicates
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False))
