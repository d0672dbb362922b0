"""On-the-fly learning from initial data, and the per-step callback."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.md.langevin import Langevin
from conftest import small_soap

from gapkit import GAPRegressor
from gapkit.active import OnTheFlyLearner
from gapkit.exceptions import (
    InvalidParameterError,
    InvalidStructureError,
    MissingLabelError,
)

#: minutes of MD with reference calls on a loaded 2-core machine: out of the default run
pytestmark = pytest.mark.slow

STEPS = 30
#: Threshold (eV/Å) of the runs compared with and without initial data: low enough
#: for several reference calls even from the earlier run's structures.
LOW = 0.01


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


def _cell(repeat, seed):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.02, seed=seed)
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(900 * units.kB * masses))
    return atoms


def _start():
    return _cell((2, 2, 1), seed=1)  # 16 atoms


def _model():
    return GAPRegressor(
        small_soap(r_cut=3.0, n_max=3, l_max=2),
        n_sparse=40,
        sigma_energy=0.001,
        sigma_force=0.02,
        sigma_virial=0.02,
        random_state=0,
    )


def _learner(reference, data, **kwargs):
    kwargs.setdefault("threshold", 0.03)
    return OnTheFlyLearner(_model(), reference, data_path=data, checkpoint_interval=5, **kwargs)


def _as_text(atoms):
    buffer = io.StringIO()
    write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def _same_model(model, expected):
    np.testing.assert_array_equal(model.sparse_numbers_, expected.sparse_numbers_)
    np.testing.assert_allclose(
        model.sparse_features_, expected.sparse_features_, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        model.coefficients_,
        expected.coefficients_,
        rtol=0,
        atol=1e-10 * np.abs(expected.coefficients_).max(),
    )


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """The data file of an earlier run on another system: a 32-atom cell (the MD
    below runs on 16 atoms), other momenta."""
    data = tmp_path_factory.mktemp("earlier") / "earlier.xyz"
    _learner(EMT(), data).run(_cell((2, 2, 2), seed=7), STEPS, timestep=2 * units.fs)
    frames = read(data, ":")
    assert len(frames) >= 3 and all(len(a) == 32 for a in frames)
    return data, frames


@pytest.fixture(scope="module")
def without_initial(tmp_path_factory):
    data = tmp_path_factory.mktemp("plain") / "d.xyz"
    reference = CountingEMT()
    learner = _learner(reference, data, threshold=LOW)
    result = learner.run(_start(), STEPS, timestep=2 * units.fs)
    assert result.reference_calls == reference.calls
    return result


@pytest.fixture(scope="module")
def with_initial(tmp_path_factory, earlier):
    """An uninterrupted run from the earlier run's structures."""
    _, frames = earlier
    data = tmp_path_factory.mktemp("initial") / "d.xyz"
    reference = CountingEMT()
    learner = _learner(reference, data, threshold=LOW, initial_data=frames)
    result = learner.run(_start(), STEPS, timestep=2 * units.fs)
    assert result.reference_calls == reference.calls >= 4
    return result, read(data, ":")


def test_initial_data_reduces_reference_calls(earlier, without_initial, with_initial):
    _, initial = earlier
    result, frames = with_initial
    assert 1 <= result.reference_calls < without_initial.reference_calls
    # the initial structures are learnt from, but not written to the data file
    assert len(frames) == result.n_labelled == result.reference_calls
    assert all(len(a) == 16 for a in frames)
    n_atoms = sum(len(a) for a in initial) + sum(len(a) for a in frames)
    assert result.model.n_observations_["energy"] == len(initial) + len(frames)
    assert result.model.n_observations_["forces"] == 3 * n_atoms
    assert frames[0].info["otf_initial_data"].startswith(f"{len(initial)}:")


def test_resume_with_initial_data_repeats_the_uninterrupted_model(earlier, with_initial, tmp_path):
    """Killed in its third reference call, the run resumes (initial data given as
    the file this time) and ends with the frames and the model of the run that was
    never killed."""
    path, initial = earlier
    expected_result, expected = with_initial
    data = tmp_path / "d.xyz"
    killed = _learner(CountingEMT(fail_on=3), data, threshold=LOW, initial_data=initial)
    with pytest.raises(RuntimeError, match="simulated crash"):
        killed.run(_start(), STEPS, timestep=2 * units.fs)
    assert len(read(data, ":")) == 2

    reference = CountingEMT()
    resumed = _learner(reference, data, threshold=LOW, initial_data=path)
    result = resumed.run(_start(), STEPS, timestep=2 * units.fs)
    assert reference.calls == result.reference_calls == len(expected) - 2
    frames = read(data, ":")
    assert [a.info["otf_step"] for a in frames] == [a.info["otf_step"] for a in expected]
    for a, b in zip(frames, expected, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-7)
    _same_model(result.model, expected_result.model)


def test_resume_refuses_other_initial_data(earlier, with_initial, tmp_path):
    _, initial = earlier
    _, frames = with_initial
    data = tmp_path / "d.xyz"
    data.write_text("".join(_as_text(a) for a in frames[:2]))
    before = data.read_bytes()
    reference = CountingEMT()
    n = len(initial)
    for other, started in (
        (None, rf"started from initial_data of {n} structures .* this learner has no "),
        (initial[:-1], rf"of {n} structures .* this learner has initial_data of {n - 1} "),
    ):
        with pytest.raises(InvalidParameterError, match=started):
            _learner(reference, data, initial_data=other).run(_start(), STEPS)
    # and a run begun without initial data is not resumed with some
    plain = tmp_path / "plain.xyz"
    plain.write_text(_as_text(frames[0]).replace(f"otf_initial_data={n}:", "x="))
    with pytest.raises(InvalidParameterError, match="started from no initial_data"):
        _learner(reference, plain, initial_data=initial).run(_start(), STEPS)
    assert data.read_bytes() == before and reference.calls == 0


def test_initial_data_is_validated(earlier):
    _, initial = earlier
    unlabelled = initial[1].copy()  # copy() drops the labels
    with pytest.raises(
        MissingLabelError,
        match=r"'initial_data': .* no energy, forces or stress \(first: structure 1\)",
    ):
        OnTheFlyLearner(_model(), EMT(), initial_data=[initial[0], unlabelled])
    with pytest.raises(InvalidStructureError, match=r"'initial_data': structure 2 is a str"):
        OnTheFlyLearner(_model(), EMT(), initial_data=[*initial[:2], "x.xyz"])
    with pytest.raises(InvalidParameterError, match="must be a list of labelled ase.Atoms"):
        OnTheFlyLearner(_model(), EMT(), initial_data=initial[0])
    # the caller's structures are not changed
    text = [_as_text(a) for a in initial]
    OnTheFlyLearner(_model(), EMT(), initial_data=initial)
    assert [_as_text(a) for a in initial] == text


def test_callback_sees_every_step_before_the_uncertainty_check(tmp_path):
    reference = CountingEMT()
    seen = []  # (step, reference calls so far, dynamics)

    def callback(dyn, step):
        seen.append((step, reference.calls, dyn))

    learner = _learner(reference, tmp_path / "d.xyz")
    result = learner.run(_start(), STEPS, timestep=2 * units.fs, callback=callback)
    assert [s for s, _, _ in seen] == list(range(STEPS + 1))  # 0: before the first step
    assert len({id(d) for _, _, d in seen}) == 1
    # a call at step s comes after the callback of step s
    called_at = [a.info["otf_step"] for a in read(tmp_path / "d.xyz", ":")]
    assert len(called_at) == result.reference_calls >= 2
    for step, calls, _ in seen:
        assert calls == sum(1 for s in called_at if s < max(step, 1))


def test_callback_ramps_a_langevin_temperature_and_resumes_at_its_step(tmp_path):
    def ramp(step):
        return 300.0 + 50.0 * step

    temperatures = []

    def callback(dyn, step):
        dyn.set_temperature(temperature_K=ramp(step))
        temperatures.append((step, dyn.temp / units.kB))

    data = tmp_path / "d.xyz"
    kwargs = dict(
        timestep=2 * units.fs,
        dynamics=Langevin,
        callback=callback,
        temperature_K=300.0,
        friction=0.02,
        fixcm=False,
        rng=np.random.default_rng(0),
    )
    _learner(CountingEMT(), data).run(_start(), 12, **kwargs)
    assert temperatures == [(s, pytest.approx(ramp(s))) for s in range(13)]
    temperatures.clear()  # resumed from the last checkpoint (step 12): ramp continues there
    _learner(CountingEMT(), data).run(_start(), 15, **kwargs)
    assert temperatures == [(s, pytest.approx(ramp(s))) for s in range(12, 16)]


def test_callback_may_strain_the_cell_and_calls_label_the_strained_atoms(tmp_path):
    def side(step):
        return 3.61 * (1 + 0.002 * step)

    def callback(dyn, step):
        cell = dyn.atoms.cell.array.copy()
        cell[0, 0], cell[1, 1] = 2 * side(step), 2 * side(step)
        dyn.atoms.set_cell(cell, scale_atoms=True)

    data = tmp_path / "d.xyz"
    result = _learner(CountingEMT(), data).run(
        _start(), 12, timestep=2 * units.fs, callback=callback
    )
    frames = read(data, ":")
    assert len(frames) == result.reference_calls >= 2
    for atoms in frames:  # labelled as the callback left them: strained cell, EMT labels
        step = atoms.info["otf_step"]
        assert atoms.cell[0, 0] == pytest.approx(2 * side(step))
        expected = atoms.copy()
        expected.calc = EMT()
        np.testing.assert_allclose(atoms.get_forces(), expected.get_forces(), atol=1e-6)
    checkpoint = read(data.with_suffix(".restart.xyz"))
    assert checkpoint.cell[0, 0] == pytest.approx(2 * side(12))


def test_callback_must_be_callable(tmp_path):
    with pytest.raises(InvalidParameterError, match="'callback' must be callable"):
        _learner(EMT(), tmp_path / "d.xyz").run(_start(), 2, callback=300.0)
    assert not (tmp_path / "d.xyz").exists()
