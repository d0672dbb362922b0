"""IncrementalGAP: structures and sparse points added without a refit equal a refit."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import small_soap
from sklearn.base import clone

from gapkit import GAPRegressor, load
from gapkit.active import IncrementalGAP
from gapkit.electrostatics import Ewald
from gapkit.exceptions import InvalidParameterError, NumericalError

RTOL = 1e-8


def _refit(model, frames):
    """What the incremental model must equal: a fit from scratch with its sparse
    points, e0 and hyperparameters."""
    return (
        clone(model)
        .set_params(e0=dict(model.e0_))
        .fit(frames, sparse_points=(model.sparse_features_, model.sparse_numbers_))
    )


def _assert_same_model(model, ref, test_frames):
    scale = np.abs(ref.coefficients_).max()
    np.testing.assert_allclose(model.coefficients_, ref.coefficients_, rtol=0, atol=RTOL * scale)
    np.testing.assert_array_equal(model.sparse_numbers_, ref.sparse_numbers_)
    np.testing.assert_allclose(model.sparse_features_, ref.sparse_features_, rtol=0, atol=0)
    assert model.n_observations_ == ref.n_observations_
    assert model.log_marginal_likelihood_ == pytest.approx(ref.log_marginal_likelihood_, rel=RTOL)
    precision, precision_ref = model.r_factor_.T @ model.r_factor_, ref.r_factor_.T @ ref.r_factor_
    np.testing.assert_allclose(
        precision, precision_ref, rtol=0, atol=RTOL * np.abs(precision_ref).max()
    )  # R: up to row signs
    e, e_std = model.predict(test_frames, return_std=True)
    e_ref, e_std_ref = ref.predict(test_frames, return_std=True)
    np.testing.assert_allclose(e, e_ref, rtol=RTOL)
    np.testing.assert_allclose(e_std, e_std_ref, rtol=RTOL)
    f, f_std = model.predict_forces(test_frames, return_std=True)
    f_ref, f_std_ref = ref.predict_forces(test_frames, return_std=True)
    for a, b in zip(f, f_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=RTOL * np.abs(b).max())
    for a, b in zip(f_std, f_std_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL)


@pytest.fixture()
def unfitted():
    return GAPRegressor(
        small_soap(), n_sparse=8, sigma_energy=0.002, sigma_force=0.05, random_state=0
    )


def test_wrapping_a_fitted_model_keeps_its_solution(cuau_frames, unfitted):
    model = unfitted.fit(cuau_frames[:4])
    before = model.coefficients_.copy()
    inc = IncrementalGAP(model, cuau_frames[:4])
    assert inc.model is model and inc.n_structures == 4
    np.testing.assert_allclose(
        model.coefficients_, before, rtol=0, atol=1e-12 * np.abs(before).max()
    )
    assert inc.cache_nbytes > 0


def test_add_structures_equals_refit(cuau_frames, unfitted):
    inc = IncrementalGAP(unfitted, cuau_frames[:4])
    inc.add_structures(cuau_frames[4:6])
    inc.add_structures(cuau_frames[6])
    assert inc.n_structures == 7
    _assert_same_model(inc.model, _refit(inc.model, cuau_frames[:7]), cuau_frames[10:12])


def test_add_sparse_points_equals_refit_in_species_order(cuau_frames, unfitted):
    inc = IncrementalGAP(unfitted, cuau_frames[:4])
    model = inc.model
    q_old, z_old = model.sparse_features_.copy(), model.sparse_numbers_.copy()
    assert list(np.unique(z_old)) == [29, 79]
    source = cuau_frames[8]
    features = model.descriptor_.features(source)
    au, cu = np.flatnonzero(source.numbers == 79)[:3], np.flatnonzero(source.numbers == 29)[:3]
    picks = np.array([au[0], cu[0], au[1], cu[1], au[2], cu[2]])  # species interleaved
    q_new, z_new = features[picks], source.numbers[picks]
    assert inc.add_sparse_points(q_new, z_new) == 6
    # ordered by species, stably: old Cu, new Cu, old Au, new Au
    n_cu = int(np.sum(z_old == 29))
    assert list(model.sparse_numbers_) == [29] * (n_cu + 3) + [79] * (len(z_old) - n_cu + 3)
    np.testing.assert_array_equal(model.sparse_features_[:n_cu], q_old[:n_cu])
    np.testing.assert_array_equal(model.sparse_features_[n_cu : n_cu + 3], q_new[1::2])
    np.testing.assert_array_equal(model.sparse_features_[-3:], q_new[::2])
    ref = (
        clone(model)
        .set_params(e0=dict(model.e0_))
        .fit(
            cuau_frames[:4],
            sparse_points=(np.vstack([q_old, q_new]), np.concatenate([z_old, z_new])),
        )
    )
    _assert_same_model(model, ref, cuau_frames[10:12])
    # then more data and more points (one species only), in either order
    inc.add_structures(cuau_frames[4:6])
    more = model.descriptor_.features(cuau_frames[9])
    cu9 = np.flatnonzero(cuau_frames[9].numbers == 29)[:2]
    assert inc.add_sparse_points(more[cu9], cuau_frames[9].numbers[cu9]) == 2
    _assert_same_model(model, _refit(model, cuau_frames[:6]), cuau_frames[10:12])


def test_duplicate_sparse_points_are_skipped(cuau_frames, unfitted):
    inc = IncrementalGAP(unfitted, cuau_frames[:3])
    model = inc.model
    before = model.coefficients_.copy()
    q, z = model.sparse_features_, model.sparse_numbers_
    assert inc.add_sparse_points(q[:2] + 1e-13, z[:2]) == 0  # equal to 1e-10: nothing
    np.testing.assert_array_equal(model.coefficients_, before)
    new = model.descriptor_.features(cuau_frames[5])[:1]
    number = cuau_frames[5].numbers[:1]
    assert inc.add_sparse_points(np.vstack([new, new, q[:1]]), np.r_[number, number, z[:1]]) == 1
    assert len(model.sparse_numbers_) == len(z) + 1


def test_failed_sparse_update_leaves_the_model_as_it_was(cuau_frames, unfitted, monkeypatch):
    inc = IncrementalGAP(unfitted, cuau_frames[:4])
    model = inc.model
    saved = {
        n: np.copy(getattr(model, n))
        for n in ("coefficients_", "sparse_features_", "sparse_numbers_", "sparse_cholesky_")
    }
    forces = model.predict_forces(cuau_frames[10:11])[0]

    def broken(*args, **kwargs):
        raise NumericalError("K_MM is not positive definite (simulated)")

    from gapkit.active import incremental

    monkeypatch.setattr(incremental, "sparse_cholesky", broken)
    new = model.descriptor_.features(cuau_frames[6])[:3]
    with pytest.raises(NumericalError):
        inc.add_sparse_points(new, cuau_frames[6].numbers[:3])
    monkeypatch.undo()
    for name, value in saved.items():
        np.testing.assert_array_equal(getattr(model, name), value)
    np.testing.assert_array_equal(model.predict_forces(cuau_frames[10:11])[0], forces)
    inc.add_structures(cuau_frames[4:6])  # the cache still matches the model
    _assert_same_model(model, _refit(model, cuau_frames[:6]), cuau_frames[10:12])


def test_bad_sparse_points_are_refused(cuau_frames, unfitted):
    inc = IncrementalGAP(unfitted, cuau_frames[:3])
    q = inc.model.sparse_features_[:2]
    with pytest.raises(InvalidParameterError, match="species"):
        inc.add_sparse_points(q, [29, 26])
    with pytest.raises(InvalidParameterError, match="shape"):
        inc.add_sparse_points(q[:, :-1], [29, 29])
    with pytest.raises(InvalidParameterError, match="only used to fit"):
        IncrementalGAP(inc.model, cuau_frames[:3], sparse_points=(q, [29, 29]))
    with pytest.raises(InvalidParameterError, match="optimize"):
        inc.optimize_hyperparameters()


def test_updated_model_saves_and_drives_a_calculator(cuau_frames, unfitted, tmp_path):
    inc = IncrementalGAP(unfitted, cuau_frames[:3])
    inc.add_sparse_points(
        inc.model.descriptor_.features(cuau_frames[4])[:3], cuau_frames[4].numbers[:3]
    )
    inc.add_structures(cuau_frames[4:5])
    inc.model.save(tmp_path / "m.gap")
    loaded = load(tmp_path / "m.gap")
    test = cuau_frames[11]
    np.testing.assert_allclose(
        loaded.predict_forces([test])[0],
        inc.model.predict_forces([test])[0],
        rtol=1e-12,
        atol=1e-12,
    )
    atoms = test.copy()
    atoms.calc = inc.model.calculator(uncertainty=True)
    np.testing.assert_allclose(
        atoms.get_forces(), inc.model.predict_forces([test])[0], rtol=1e-12, atol=1e-12
    )
    assert np.all(np.isfinite(atoms.calc.results["forces_std"]))


def test_hyperparameters_reoptimised_from_the_cache(cuau_frames):
    model = GAPRegressor(
        small_soap(n_max=3, l_max=2),
        n_sparse=6,
        sigma_energy=0.002,
        sigma_force=0.05,
        optimize=["sigma_force", "delta"],
        random_state=0,
    )
    inc = IncrementalGAP(model, cuau_frames[:3])
    inc.add_sparse_points(
        model.descriptor_.features(cuau_frames[3])[:4], cuau_frames[3].numbers[:4]
    )
    inc.add_structures(cuau_frames[3:5])
    # updates keep the hyperparameters of the first fit ...
    ref = (
        clone(model)
        .set_params(
            e0=dict(model.e0_),
            optimize=False,
            delta=model.hyperparameters_["delta"],
            sigma_force=model.hyperparameters_["sigma_force"],
        )
        .fit(cuau_frames[:5], sparse_points=(model.sparse_features_, model.sparse_numbers_))
    )
    _assert_same_model(model, ref, cuau_frames[10:11])
    # ... until they are optimised again, as a refit with optimize does
    inc.optimize_hyperparameters()
    ref = _refit(model, cuau_frames[:5])
    assert model.hyperparameters_["sigma_force"] == pytest.approx(
        ref.hyperparameters_["sigma_force"], rel=1e-5
    )
    for s in ("Cu", "Au"):
        assert model.hyperparameters_["delta"][s] == pytest.approx(
            ref.hyperparameters_["delta"][s], rel=1e-5
        )
    np.testing.assert_allclose(
        model.predict_forces(cuau_frames[10:11])[0],
        ref.predict_forces(cuau_frames[10:11])[0],
        rtol=0,
        atol=1e-6,
    )
    # and later updates keep the new values
    inc.add_structures(cuau_frames[5:6])
    fixed = (
        clone(model)
        .set_params(
            e0=dict(model.e0_),
            optimize=False,
            delta=model.hyperparameters_["delta"],
            sigma_force=model.hyperparameters_["sigma_force"],
        )
        .fit(cuau_frames[:6], sparse_points=(model.sparse_features_, model.sparse_numbers_))
    )
    np.testing.assert_allclose(
        model.coefficients_,
        fixed.coefficients_,
        rtol=0,
        atol=1e-7 * np.abs(fixed.coefficients_).max(),
    )


@pytest.fixture(scope="module")
def nacl_frames():
    """Rattled NaCl cells labelled with a Lennard-Jones potential (any labels do)."""
    frames = []
    for k in range(5):
        atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
        atoms.set_cell(atoms.cell.array * (1 + 0.02 * np.sin(k)), scale_atoms=True)
        atoms.rattle(0.1, seed=k)
        atoms.calc = LennardJones(sigma=2.5, epsilon=0.05, rc=5.0, smooth=True)
        results = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def test_baseline_is_subtracted_from_added_structures(nacl_frames):
    model = GAPRegressor(
        small_soap(r_cut=3.0, n_max=3, l_max=2),
        n_sparse=3,
        baseline=Ewald(charges={"Na": 0.8, "Cl": -0.8}, accuracy=1e-6),
        sigma_energy=0.002,
        sigma_force=0.05,
        random_state=0,
    )
    inc = IncrementalGAP(model, nacl_frames[:2])
    inc.add_sparse_points(
        model.descriptor_.features(nacl_frames[2])[:3], nacl_frames[2].numbers[:3]
    )
    inc.add_structures(nacl_frames[2:4])
    _assert_same_model(model, _refit(model, nacl_frames[:4]), nacl_frames[4:])
