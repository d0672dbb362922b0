"""GAPRegressor: physics of the fitted model and the scikit-learn contract."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import labelled, small_soap
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from gapkit import SOAP, GAPRegressor
from gapkit.exceptions import InvalidParameterError


def _fd_check(model, atoms, h=1e-4):
    atoms = atoms.copy()
    atoms.calc = model.calculator()
    forces = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, h)
    return np.abs(forces - numeric).max() / np.abs(forces).max()


@pytest.mark.parametrize("which", ["bulk", "vacancy", "surface"])
def test_forces_are_minus_energy_gradient(cu_model, cu_data, which):
    _, test = cu_data
    atoms = next(a for a in test if a.info["config_type"].startswith(which))
    assert _fd_check(cu_model, atoms) < 1e-6


def test_forces_two_species(cuau_model, cuau_frames):
    assert _fd_check(cuau_model, cuau_frames[0]) < 1e-6


@pytest.mark.parametrize("fixture", ["cu_model", "cuau_model"])
def test_stress_is_strain_derivative(request, fixture, cu_data, cuau_frames):
    model = request.getfixturevalue(fixture)
    atoms = (cu_data[1][0] if fixture == "cu_model" else cuau_frames[1]).copy()
    atoms.calc = model.calculator()
    stress = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, 1e-4)
    assert np.abs(stress - numeric).max() < 1e-6 * np.abs(stress).max() + 1e-9


def test_invariance_and_equivariance(cuau_model, cuau_frames):
    atoms = cuau_frames[2]
    energy = cuau_model.predict([atoms])[0]
    forces = cuau_model.predict_forces([atoms])[0]

    moved = atoms.copy()
    moved.translate([0.7, -0.2, 1.3])
    moved.wrap()
    assert cuau_model.predict([moved])[0] == pytest.approx(energy, abs=1e-9)

    rot = atoms.copy()
    rot.rotate(50, (1, -1, 2), rotate_cell=True)
    rotation = np.linalg.solve(atoms.cell.array, rot.cell.array).T  # r' = R r
    assert cuau_model.predict([rot])[0] == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(cuau_model.predict_forces([rot])[0], forces @ rotation.T, atol=1e-9)

    perm = np.random.default_rng(1).permutation(len(atoms))
    assert cuau_model.predict([atoms[perm]])[0] == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(cuau_model.predict_forces([atoms[perm]])[0], forces[perm], atol=1e-9)


def test_supercell_gives_same_per_atom_energies(cuau_model, cuau_frames):
    atoms = cuau_frames[3]
    local = cuau_model.predict_local_energies([atoms])[0]
    local8 = cuau_model.predict_local_energies([atoms * (2, 2, 2)])[0]
    np.testing.assert_allclose(local8, np.tile(local, 8), atol=1e-10)
    np.testing.assert_allclose(
        cuau_model.predict_stress([atoms * (2, 2, 2)]),
        cuau_model.predict_stress([atoms]),
        atol=1e-10,
    )


def test_fit_reproduces_training_data_and_generalises(cu_data):
    train, test = cu_data
    model = GAPRegressor(small_soap(), n_sparse=100, random_state=0).fit(train)
    report = model.evaluate(test)
    # EMT copper: forces of ~0.5 eV/Å; a GAP with this small basis gets them to a few %.
    assert report["force_rmse"] < 0.03
    assert report["energy_rmse_per_atom"] < 0.002
    assert report["stress_rmse"] < 0.002
    assert report["n_structures"] == len(test)


def test_e0_options(cuau_frames):
    fit = GAPRegressor(small_soap(), n_sparse=20, random_state=0).fit(cuau_frames)
    # least squares on composition reproduces the mean energy per composition
    comp = np.array(
        [[a.get_chemical_symbols().count(s) for s in ("Cu", "Au")] for a in cuau_frames]
    )
    energies = np.array([a.get_potential_energy() for a in cuau_frames])
    expected, *_ = np.linalg.lstsq(comp, energies, rcond=None)
    assert fit.e0_ == pytest.approx({"Cu": expected[0], "Au": expected[1]})
    zero = GAPRegressor(small_soap(), n_sparse=20, e0="zero").fit(cuau_frames)
    assert zero.e0_ == {"Cu": 0.0, "Au": 0.0}
    given = GAPRegressor(small_soap(), n_sparse=20, e0={"Cu": -1.0, "Au": -2.0})
    assert given.fit(cuau_frames).e0_ == {"Cu": -1.0, "Au": -2.0}
    with pytest.raises(InvalidParameterError, match="e0"):
        GAPRegressor(small_soap(), e0={"Cu": 0.0}).fit(cuau_frames)


def test_sigma_overrides_change_the_fit(cu_data):
    train = [a.copy() for a in cu_data[0][:8]]
    for a, b in zip(train, cu_data[0][:8], strict=True):
        a.calc = b.calc
    base = GAPRegressor(small_soap(), n_sparse=30, random_state=0).fit(train)
    train[0].info["energy_sigma"] = 1e-5
    tight = GAPRegressor(small_soap(), n_sparse=30, random_state=0).fit(train)
    err = [abs(m.predict([train[0]])[0] - train[0].get_potential_energy()) for m in (base, tight)]
    assert err[1] < err[0]
    by_type = GAPRegressor(
        small_soap(),
        n_sparse=30,
        random_state=0,
        config_type_sigma={train[1].info["config_type"]: {"force": 1e-4}},
    ).fit(train)
    ferr = [
        np.abs(m.predict_forces([train[1]])[0] - train[1].get_forces()).max()
        for m in (base, by_type)
    ]
    assert ferr[1] < ferr[0]
    with pytest.raises(InvalidParameterError, match="config_type_sigma"):
        GAPRegressor(config_type_sigma={"x": {"energy": -1.0}}).fit(train)


def test_y_overrides_energies(cuau_frames):
    shift = 10.0
    y = np.array([a.get_potential_energy() + shift * len(a) for a in cuau_frames])
    model = GAPRegressor(small_soap(), n_sparse=20, random_state=0).fit(cuau_frames, y)
    assert model.e0_["Cu"] == pytest.approx(
        GAPRegressor(small_soap(), n_sparse=20).fit(cuau_frames).e0_["Cu"] + shift
    )


def test_clone_and_params_untouched(cuau_frames):
    descriptor = small_soap()
    model = GAPRegressor(descriptor, n_sparse=20, delta={"Cu": 1.0, "Au": 1.5})
    before = model.get_params(deep=False).copy()
    model.fit(cuau_frames)
    after = model.get_params(deep=False)
    assert after["delta"] == before["delta"] and after["n_sparse"] == 20
    assert descriptor.species is None  # species set on a copy, not on the user's object
    twin = clone(model)
    assert twin.get_params()["descriptor__n_max"] == 4
    assert not hasattr(twin, "coefficients_")
    twin.set_params(descriptor__n_max=5, zeta=2)
    assert twin.descriptor.n_max == 5 and twin.zeta == 2


def _cu_cells(n, seed):
    """``n`` small Cu cells (8 atoms) of random lattice constants, labelled with EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, a in enumerate(rng.uniform(3.5, 3.75, n)):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=k)
        frames.append(labelled(atoms))
    return frames


def test_cross_val_score_and_grid_search():
    frames = _cu_cells(9, seed=7)
    model = GAPRegressor(SOAP(r_cut=3.5, n_max=3, l_max=2), n_sparse=10, random_state=0)
    cv = KFold(3)
    # a prior of 1 meV per atom cannot follow the energies (0.08 eV/atom apart): it must lose
    grid_values = [1e-3, 1.0]

    # the reference: an explicit fit and score per fold and candidate
    def fold_scores(delta):
        return np.array(
            [
                clone(model)
                .set_params(delta=delta)
                .fit([frames[i] for i in train])
                .score([frames[i] for i in test])
                for train, test in cv.split(frames)
            ]
        )

    explicit = {delta: fold_scores(delta) for delta in grid_values}
    assert explicit[1.0].mean() > 0.9 > 0.5 > explicit[1e-3].mean()

    scores = cross_val_score(model, frames, cv=cv)
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores, explicit[1.0], rtol=1e-10)

    grid = GridSearchCV(model, {"delta": grid_values}, cv=cv).fit(frames)
    means = {
        p["delta"]: m
        for p, m in zip(
            grid.cv_results_["params"], grid.cv_results_["mean_test_score"], strict=True
        )
    }
    for delta in grid_values:
        assert means[delta] == pytest.approx(explicit[delta].mean(), rel=1e-10)
    assert grid.best_params_ == {"delta": 1.0}  # the bad value lost
    assert grid.best_estimator_.get_params()["delta"] == 1.0
    assert isinstance(grid.best_estimator_.descriptor_, SOAP)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"zeta": 0}, "'zeta'"),
        ({"sigma_force": 0.0}, "'sigma_force'"),
        ({"sigma_energy": -1.0}, "'sigma_energy'"),
        ({"n_sparse": 0}, "'n_sparse'"),
        ({"sparse_method": "kmeans"}, "'sparse_method'"),
        ({"delta": -1}, "'delta'"),
        ({"descriptor": "soap"}, "'descriptor'"),
    ],
)
def test_invalid_parameters(cuau_frames, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        GAPRegressor(**params).fit(cuau_frames)


def test_energy_only_and_forces_only_labels():
    frames = []
    for k in range(8):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.1, seed=k)
        frames.append(labelled(atoms))
    train, test = frames[:6], frames[6:]

    # energy only: the calculator (forces, stress) dropped, the energy under its own key
    energy_only = [a.copy() for a in train]
    for a, b in zip(energy_only, train, strict=True):
        a.info["my_energy"] = b.get_potential_energy()
    model = GAPRegressor(small_soap(), n_sparse=10, energy_key="my_energy", random_state=0).fit(
        energy_only
    )
    assert model.n_observations_ == {"energy": 6, "forces": 0, "virial": 0}
    energies = np.array([a.get_potential_energy() for a in train])
    # the energies (spread ~0.8 eV) are reproduced to a few per cent of their spread
    assert np.abs(model.predict(energy_only) - energies).max() < 0.05 * np.ptp(energies)

    # forces only: no energy, no stress on the structures (and so no e0 to fit: given)
    forces_only = []
    for a in train:
        b = a.copy()
        b.calc = SinglePointCalculator(b, forces=a.get_forces())
        forces_only.append(b)
    model = GAPRegressor(small_soap(), n_sparse=20, e0={"Cu": -0.25}, random_state=0).fit(
        forces_only
    )
    assert model.n_observations_ == {"energy": 0, "forces": 6 * 8 * 3, "virial": 0}
    assert model.e0_ == {"Cu": -0.25}
    for frames_ in (train, test):
        labels = np.concatenate([a.get_forces().ravel() for a in frames_])
        predicted = np.concatenate([f.ravel() for f in model.predict_forces(frames_)])
        # a tenth of the spread of the labels (~1.2 eV/Å), on the training and held-out cells
        assert np.sqrt(np.mean((predicted - labels) ** 2)) < 0.1 * np.std(labels)


def test_prediction_in_centre_chunks_is_exact(cuau_model, cuau_frames, monkeypatch):
    from gapkit import prediction

    big = cuau_frames[4] * (2, 1, 1)
    whole = cuau_model.predict_all([big])[0]
    monkeypatch.setattr(prediction, "CENTRE_CHUNK", 5)
    chunked = cuau_model.predict_all([big])[0]
    np.testing.assert_allclose(chunked["energies"], whole["energies"], atol=1e-12)
    np.testing.assert_allclose(chunked["forces"], whole["forces"], atol=1e-12)
    np.testing.assert_allclose(chunked["stress"], whole["stress"], atol=1e-14)


def test_one_structure_over_two_processes_is_exact(cuau_model, cuau_frames):
    import copy

    big = cuau_frames[4] * (2, 2, 1)
    serial = cuau_model.predict_all([big])[0]
    parallel = copy.deepcopy(cuau_model).set_params(n_jobs=2).predict_all([big])[0]
    np.testing.assert_allclose(parallel["forces"], serial["forces"], atol=1e-10)
    np.testing.assert_allclose(parallel["stress"], serial["stress"], atol=1e-12)
    assert parallel["energy"] == pytest.approx(serial["energy"], abs=1e-9)
