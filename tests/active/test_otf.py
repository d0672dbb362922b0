"""On-the-fly learning: reference calls, files on disk, resume after a crash."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write
from conftest import small_soap

from gapkit import GAPRegressor
from gapkit.active import IncrementalGAP, OnTheFlyLearner, label_structures
from gapkit.exceptions import InvalidParameterError, InvalidStructureError


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
    return GAPRegressor(
        small_soap(r_cut=3.0, n_max=3, l_max=2),
        n_sparse=40,
        sigma_energy=0.001,
        sigma_force=0.02,
        sigma_virial=0.02,
        random_state=0,
    )


def test_reference_calls_are_written_before_use(tmp_path, monkeypatch):
    data = tmp_path / "d.xyz"
    on_disk = []  # (frames in the file, the structures being learned) at every model change
    original_init, original_add = IncrementalGAP.__init__, IncrementalGAP.add_structures

    def init(self, model, frames, *args, **kwargs):
        on_disk.append((read(data, ":"), list(frames)))
        original_init(self, model, frames, *args, **kwargs)

    def add(self, frames, y=None):
        on_disk.append((read(data, ":"), list(frames)))
        return original_add(self, frames, y)

    monkeypatch.setattr(IncrementalGAP, "__init__", init)
    monkeypatch.setattr(IncrementalGAP, "add_structures", add)
    ref = CountingEMT()
    learner = OnTheFlyLearner(_model(), ref, threshold=0.05, data_path=data)
    result = learner.run(_start(), 40, timestep=2 * units.fs)
    assert result.steps == 40
    assert 2 <= result.reference_calls == result.n_labelled == ref.calls
    # one model change per reference call, and each time the structure it learns
    # is already the last frame of the file (the frame count grows by one per call)
    assert [len(frames) for frames, _ in on_disk] == list(range(1, ref.calls + 1))
    for frames, learned in on_disk:
        (new,) = learned
        np.testing.assert_array_equal(frames[-1].positions, new.positions)
        assert frames[-1].get_potential_energy() == new.get_potential_energy()
    frames = read(data, ":")
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
    return OnTheFlyLearner(
        _model(), reference, threshold=0.03, data_path=data, checkpoint_interval=5, **kwargs
    )


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
    np.testing.assert_allclose(
        model.sparse_features_, expected.sparse_features_, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        model.coefficients_,
        expected.coefficients_,
        rtol=0,
        atol=1e-10 * np.abs(expected.coefficients_).max(),
    )


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

    learner.run(heavy, frames[1].info["otf_step"] + 1, timestep=2 * units.fs, dynamics=dynamics)
    np.testing.assert_allclose(seen[0], heavy.get_masses())


def test_n_sparse_add_must_not_be_negative():
    with pytest.raises(InvalidParameterError, match="n_sparse_add"):
        OnTheFlyLearner(_model(), EMT(), n_sparse_add=-1)


# ------------------------------------------------- files that must not be lost


@pytest.fixture(scope="module")
def twelve_frames():
    """The text of a data file of 12 labelled structures, as a run writes them."""
    frames = []
    for k in range(12):
        atoms = _start()
        atoms.rattle(0.05, seed=k)
        (labelled,) = label_structures([atoms], EMT())
        labelled.info["otf_step"] = 3 * k
        labelled.info["config_type"] = "otf"
        frames.append(labelled)
    return "".join(_as_text(a) for a in frames)


def _frame_lines(text):
    """Lines (with ends) and the number of lines per frame (all frames alike here)."""
    lines = text.splitlines(keepends=True)
    return lines, int(lines[0]) + 2


def _damage(text, how):
    """The text with frame 5 (from 1) damaged, and the line (from 1) that is damaged."""
    lines, per = _frame_lines(text)
    first = 4 * per  # index of frame 5's atom-count line
    if how == "atom count":
        lines[first] = "x16\n"
        return "".join(lines), first + 1
    if how == "number":
        fields = lines[first + 5].split()
        fields[2] = "1.2.3"
        lines[first + 5] = " ".join(fields) + "\n"
        return "".join(lines), first + 6
    if how == "line lost":  # the frame takes the next one's count line as an atom line
        del lines[first + 5]
        return "".join(lines), first + per
    if how == "comment line":
        lines[first + 1] = lines[first + 1].replace("Lattice=", "Lattice=junk", 1)
        return "".join(lines), first + 1
    raise ValueError(how)


@pytest.mark.parametrize("how", ["atom count", "number", "line lost", "comment line"])
def test_resume_refuses_a_file_damaged_in_the_middle(twelve_frames, tmp_path, how):
    """One bad line in frame 5 of 12 used to cut the file to 4 frames (or crash); the
    file is now refused, byte for byte as it was, and no reference call is made."""
    data = tmp_path / "d.xyz"
    text, line = _damage(twelve_frames, how)
    data.write_text(text)
    before = data.read_bytes()
    reference = CountingEMT()
    where = rf"line {line}" if how != "comment line" else rf"line {line}\b"
    with pytest.raises(
        InvalidStructureError,
        match=rf"{re.escape(repr(str(data)))} is damaged in frame 5 \(frames "
        rf"counted from 1\), {where}.*Frames 1 to 4 are intact",
    ):
        _learner(reference, data).run(_start(), 60, timestep=2 * units.fs)
    assert data.read_bytes() == before
    assert reference.calls == 0


def test_a_frame_cut_short_is_dropped_only_at_the_end(twelve_frames, tmp_path):
    """The killed-while-appending case still resumes: the half frame is cut, the
    eleven complete ones are kept (and replayed, without a reference call)."""
    data = tmp_path / "d.xyz"
    lines, per = _frame_lines(twelve_frames)
    whole = "".join(lines[: 11 * per])
    cut = "".join(lines[11 * per :])
    data.write_text(whole + cut[: len(cut) // 2])
    reference = CountingEMT()
    learner = OnTheFlyLearner(_model(), reference, threshold=10.0, data_path=data)
    with pytest.warns(RuntimeWarning, match="the last frame of .* is incomplete"):
        result = learner.run(_start(), 34, timestep=2 * units.fs)
    assert reference.calls == result.reference_calls == 0
    assert data.read_text() == whole and result.n_labelled == 11


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, cu_data):
    path = tmp_path_factory.mktemp("model") / "cu.gap"
    _model().fit(cu_data[0][:3]).save(path)
    return path


@pytest.mark.parametrize("content", ["model file", "training data", "text"])
def test_data_path_that_is_not_a_run_is_not_overwritten(model_file, cu_data, tmp_path, content):
    target = tmp_path / "data.gap"
    if content == "model file":
        target.write_bytes(model_file.read_bytes())
    elif content == "training data":  # extended XYZ, but not written by a run
        write(target, cu_data[0][:3], format="extxyz")
    else:
        target.write_text("my notes\n")
    before = target.read_bytes()
    reference = CountingEMT()
    with pytest.raises(
        InvalidParameterError,
        match=rf"{re.escape(repr(str(target)))} does not look like an "
        r"extended-XYZ data file of a previous run",
    ):
        _learner(reference, target).run(_start(), 10, timestep=2 * units.fs)
    assert target.read_bytes() == before
    assert reference.calls == 0


def test_checkpoint_path_that_is_not_a_checkpoint_is_not_overwritten(model_file, tmp_path):
    checkpoint = tmp_path / "state.gap"
    checkpoint.write_bytes(model_file.read_bytes())
    reference = CountingEMT()
    learner = _learner(reference, tmp_path / "d.xyz", checkpoint_path=checkpoint)
    with pytest.raises(
        InvalidParameterError,
        match=rf"checkpoint {re.escape(repr(str(checkpoint)))} does not look "
        r"like the checkpoint of a previous run",
    ):
        learner.run(_start(), 10, timestep=2 * units.fs)
    assert checkpoint.read_bytes() == model_file.read_bytes()
    assert reference.calls == 0 and not (tmp_path / "d.xyz").exists()


def test_paths_are_checked_before_the_first_reference_call(tmp_path):
    reference = CountingEMT()
    missing = tmp_path / "missing" / "d.xyz"
    with pytest.raises(
        InvalidParameterError, match=rf"cannot write {re.escape(repr(str(missing)))}: directory"
    ):
        _learner(reference, missing).run(_start(), 10, timestep=2 * units.fs)
    same = tmp_path / "d.xyz"
    with pytest.raises(InvalidParameterError, match="are the same file"):
        _learner(reference, same, checkpoint_path=same).run(_start(), 10)
    assert reference.calls == 0


def test_checkpoint_is_written_atomically_with_the_umask(tmp_path):
    data = tmp_path / "d.xyz"
    old = os.umask(0o022)
    try:
        OnTheFlyLearner(_model(), EMT(), threshold=10.0, data_path=data).run(
            _start(), 2, timestep=2 * units.fs
        )
    finally:
        os.umask(old)
    checkpoint = data.with_suffix(".restart.xyz")
    assert oct(checkpoint.stat().st_mode & 0o777) == oct(0o644)
    assert read(checkpoint).info["otf_step"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
