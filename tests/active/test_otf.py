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
from gapkit.active import IncrementalGAP, OnTheFlyLearner
from gapkit.exceptions import InvalidParameterError


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


def _learner(reference, data, **kwargs):
    return OnTheFlyLearner(_model(), reference, threshold=0.03, data_path=data,
                           checkpoint_interval=5, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    data = tmp_path_factory.mktemp("otf") / "u.xyz"
    reference = CountingEMT()
    result = _learner(reference, data).run(_start(), 30, timestep=2 * units.fs)
    assert result.reference_calls == reference.calls >= 3
    return result, read(data, ":")


def _same_frames(frames, expected):
    assert [a.info["otf_step"] for a in frames] == [a.info["otf_step"] for a in expected]
    for a, b in zip(frames, expected, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-7)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-7)


def _same_model(model, expected):
    np.testing.assert_array_equal(model.sparse_numbers_, expected.sparse_numbers_)
    np.testing.assert_allclose(model.sparse_features_, expected.sparse_features_, rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(model.coefficients_, expected.coefficients_, rtol=0,
                               atol=1e-10 * np.abs(expected.coefficients_).max())


def test_resume_rebuilds_the_model_of_the_uninterrupted_run(uninterrupted, tmp_path):
    result, frames = uninterrupted
    data = tmp_path / "d.xyz"
    data.write_text("".join(_as_text(a) for a in frames))
    reference = CountingEMT()
    resumed = _learner(reference, data).run(_start(), 30, timestep=2 * units.fs)
    assert reference.calls == resumed.reference_calls == 0  # replayed from the file only
    assert resumed.n_labelled == len(frames)
    _same_model(resumed.model, result.model)


@pytest.mark.parametrize("crash", ["in the reference call", "between write and update"])
def test_killed_run_resumes_as_if_never_killed(uninterrupted, tmp_path, monkeypatch, crash):
    result, expected = uninterrupted
    data = tmp_path / "d.xyz"
    if crash == "in the reference call":  # the third call dies: two structures on disk
        killed, on_disk = _learner(CountingEMT(fail_on=3), data), 2
    else:  # the second update dies after the third structure was written
        killed, on_disk = _learner(CountingEMT(), data), 3
        original, updates = IncrementalGAP.add_structures, []

        def dying(self, frames, y=None):
            updates.append(1)
            if len(updates) == 2:
                raise RuntimeError("simulated crash during the update")
            return original(self, frames, y)

        monkeypatch.setattr(IncrementalGAP, "add_structures", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        killed.run(_start(), 30, timestep=2 * units.fs)
    monkeypatch.undo()
    _same_frames(read(data, ":"), expected[:on_disk])

    reference = CountingEMT()
    resumed = _learner(reference, data).run(_start(), 30, timestep=2 * units.fs)
    assert reference.calls == resumed.reference_calls == len(expected) - on_disk
    frames = read(data, ":")
    _same_frames(frames, expected)  # none lost, none twice, none recomputed
    assert resumed.steps == result.steps and resumed.n_labelled == len(expected)
    _same_model(resumed.model, result.model)


def _as_text(atoms):
    import io

    from ase.io import write

    buffer = io.StringIO()
    write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def test_resume_drops_a_frame_cut_short_while_written(uninterrupted, tmp_path):
    """A run killed while appending a frame leaves half of it: the resumed run
    removes it (with a warning), labels that structure again and ends as the
    uninterrupted run did."""
    result, expected = uninterrupted
    data = tmp_path / "d.xyz"
    whole = "".join(_as_text(a) for a in expected[:2])
    half = _as_text(expected[2])
    data.write_text(whole + half[: len(half) // 2])
    reference = CountingEMT()
    with pytest.warns(RuntimeWarning, match="incomplete"):
        resumed = _learner(reference, data).run(_start(), 30, timestep=2 * units.fs)
    assert reference.calls == resumed.reference_calls == len(expected) - 2
    _same_frames(read(data, ":"), expected)
    _same_model(resumed.model, result.model)


def test_resume_refuses_another_system(uninterrupted, tmp_path):
    _, frames = uninterrupted
    data = tmp_path / "d.xyz"
    data.write_text("".join(_as_text(a) for a in frames[:2]))
    other = _start()
    other.numbers[0] = 79  # Au
    with pytest.raises(InvalidParameterError, match="different system"):
        _learner(CountingEMT(), data).run(other, 30, timestep=2 * units.fs)


def test_resume_keeps_the_callers_masses(uninterrupted, tmp_path):
    _, frames = uninterrupted
    data = tmp_path / "d.xyz"
    data.write_text("".join(_as_text(a) for a in frames[:2]))
    heavy = _start()
    heavy.set_masses(heavy.get_masses() * 4)
    learner = _learner(CountingEMT(), data)
    seen = []

    def dynamics(atoms, timestep, **kwargs):
        seen.append(atoms.get_masses().copy())
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep)

    learner.run(heavy, frames[1].info["otf_step"] + 1, timestep=2 * units.fs,
                dynamics=dynamics)
    np.testing.assert_allclose(seen[0], heavy.get_masses())


def test_n_sparse_add_must_not_be_negative():
    with pytest.raises(InvalidParameterError, match="n_sparse_add"):
        OnTheFlyLearner(_model(), EMT(), n_sparse_add=-1)
