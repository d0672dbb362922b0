"""SOAP descriptor: derivatives, sum rule, invariances, periodic images."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from conftest import small_soap
from dscribe.descriptors import SOAP as DScribeSOAP

from gapkit.descriptors import _PaddedSOAP, neighbour_cutoff
from gapkit.exceptions import InvalidParameterError, UnknownSpeciesError


@pytest.fixture
def nacl_rattled():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.1, seed=1)
    return atoms


def test_features_are_unit_vectors(nacl_rattled):
    q = small_soap(species=["Na", "Cl"]).features(nacl_rattled)
    assert q.shape[0] == len(nacl_rattled)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-12)


def test_cluster_route_reproduces_dscribe_periodic_descriptor(nacl_rattled):
    """Per-centre clusters with images equal DScribe's own periodic SOAP."""
    soap = small_soap(species=["Na", "Cl"])
    engine = soap._engine()
    periodic = _PaddedSOAP(
        species=["Na", "Cl"],
        r_cut=soap.r_cut,
        n_max=soap.n_max,
        l_max=soap.l_max,
        sigma=soap.sigma,
        periodic=True,
        cutoff_tolerance=soap.cutoff_tolerance,
    )
    assert periodic.get_cutoff_padding() == pytest.approx(engine.get_cutoff_padding())
    p = periodic.create(nacl_rattled) * soap._weights()
    q_ref = p / np.linalg.norm(p, axis=1, keepdims=True)
    np.testing.assert_allclose(soap.features(nacl_rattled), q_ref, atol=1e-11)
    desc = soap.features_and_derivatives(nacl_rattled)
    np.testing.assert_allclose(desc.features, q_ref, atol=1e-11)


def test_sqrt2_weights_give_full_power_spectrum_kernel():
    """q.q' with the weights equals sum over ordered (n, n') of p p' (single species)."""
    soap = small_soap(species=["Cu"])
    engine = soap._engine()
    w = soap._weights()
    n_max, l_max = soap.n_max, soap.l_max
    pairs = [(n, m) for n in range(n_max) for m in range(n, n_max)]
    rng = np.random.default_rng(0)
    a = Atoms("Cu4", positions=rng.uniform(0, 2.5, (4, 3)))
    b = Atoms("Cu4", positions=rng.uniform(0, 2.5, (4, 3)))
    pa = engine.create(a, centers=[0])[0]
    pb = engine.create(b, centers=[0])[0]

    def full(p):  # expand DScribe's (l, n<=n') layout to the full n x n' matrix per l
        out = np.zeros((l_max + 1, n_max, n_max))
        for deg in range(l_max + 1):
            for k, (n, m) in enumerate(pairs):
                out[deg, n, m] = out[deg, m, n] = p[deg * len(pairs) + k]
        return out

    np.testing.assert_allclose((w * pa) @ (w * pb), np.sum(full(pa) * full(pb)), rtol=1e-12)


@pytest.mark.parametrize("species", [["Cu"], ["Na", "Cl"]])
def test_derivatives_match_finite_differences(species):
    rng = np.random.default_rng(2)
    if species == ["Cu"]:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    else:
        atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    soap = small_soap(species=species)
    desc = soap.features_and_derivatives(atoms)
    h = 1e-5
    for j in (0, 3):
        for b in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[j, b] += h
            minus.positions[j, b] -= h
            fd = (soap.features(plus) - soap.features(minus)) / (2 * h)
            an = np.zeros_like(fd)
            sel = desc.neighbour == j
            an[desc.centre[sel]] = desc.dq_dr[sel][:, b]
            np.testing.assert_allclose(an, fd, atol=1e-7 * np.abs(fd).max())


def test_strain_derivative_matches_finite_differences(nacl_rattled):
    soap = small_soap(species=["Na", "Cl"])
    desc = soap.features_and_derivatives(nacl_rattled)
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 0)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h
        plus, minus = nacl_rattled.copy(), nacl_rattled.copy()
        plus.set_cell(nacl_rattled.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        minus.set_cell(nacl_rattled.cell.array @ (np.eye(3) - eps), scale_atoms=True)
        fd = (soap.features(plus) - soap.features(minus)) / (2 * h)
        sym = desc.dq_dstrain[:, a, b] + desc.dq_dstrain[:, b, a]
        an = sym if a != b else desc.dq_dstrain[:, a, a]
        np.testing.assert_allclose(an, fd, atol=1e-7 * np.abs(fd).max())


def test_sum_rule_translation(nacl_rattled):
    """sum_j dq_i/dr_j = 0: moving all atoms together changes nothing."""
    desc = small_soap(species=["Na", "Cl"]).features_and_derivatives(nacl_rattled)
    total = np.zeros((len(nacl_rattled), 3, desc.dq_dr.shape[2]))
    np.add.at(total, desc.centre, desc.dq_dr)
    assert np.abs(total).max() < 1e-12


def test_invariances(nacl_rattled):
    soap = small_soap(species=["Na", "Cl"])
    q = soap.features(nacl_rattled)
    moved = nacl_rattled.copy()
    moved.translate([0.3, -1.1, 2.2])
    moved.wrap()
    np.testing.assert_allclose(soap.features(moved), q, atol=1e-11)
    rotated = nacl_rattled.copy()
    rotated.rotate(37, (1, 2, 3), rotate_cell=True)
    np.testing.assert_allclose(soap.features(rotated), q, atol=1e-11)
    perm = np.random.default_rng(0).permutation(len(nacl_rattled))
    np.testing.assert_allclose(soap.features(nacl_rattled[perm]), q[perm], atol=1e-11)


def test_supercell_and_small_cell():
    """A primitive cell (smaller than the cutoff) and its supercells agree."""
    soap = small_soap(species=["Cu"])
    prim = bulk("Cu", "fcc", a=3.6)
    q1 = soap.features_and_derivatives(prim).features
    q8 = soap.features(prim * (2, 2, 2))
    np.testing.assert_allclose(q8, np.repeat(q1, 8, axis=0), atol=1e-11)


def test_molecule_and_padding():
    soap = small_soap(species=["C", "H", "O"])
    mol = molecule("CH3OH")
    desc = soap.features_and_derivatives(mol)
    assert desc.features.shape == (6, soap.n_features)
    assert soap.neighbour_cutoff == pytest.approx(neighbour_cutoff(3.5, 0.5, 1e-10))
    assert (
        soap.neighbour_cutoff
        > soap.r_cut
        + DScribeSOAP(species=["C"], r_cut=3.5, n_max=4, l_max=3, sigma=0.5).get_cutoff_padding()
    )


def test_cutoff_crossing_is_smooth():
    """A dimer whose partner crosses the neighbour sphere: the jump is ~tolerance."""
    soap = small_soap(species=["Cu"])
    rc = soap.neighbour_cutoff
    inside = Atoms("Cu2", positions=[[0, 0, 0], [rc - 1e-7, 0, 0]])
    outside = Atoms("Cu2", positions=[[0, 0, 0], [rc + 1e-7, 0, 0]])
    jump = np.abs(soap.features(inside) - soap.features(outside)).max()
    assert jump < 1e-9
    coarse = small_soap(species=["Cu"], cutoff_tolerance=1e-3)
    rc = coarse.neighbour_cutoff
    inside.positions[1, 0], outside.positions[1, 0] = rc - 1e-7, rc + 1e-7
    assert np.abs(coarse.features(inside) - coarse.features(outside)).max() > 1e3 * jump


def test_errors():
    with pytest.raises(UnknownSpeciesError, match="Au"):
        small_soap(species=["Cu"]).features(bulk("Au"))
    with pytest.raises(InvalidParameterError, match="'n_max'"):
        small_soap(species=["Cu"], n_max=1).features(bulk("Cu"))
    with pytest.raises(InvalidParameterError, match="species"):
        small_soap().features(bulk("Cu"))


def test_contracted_derivatives_equal_stored_ones(cuau_model, cuau_frames):
    """The one-pass prediction path gives what stored derivatives give."""
    from gapkit.design import local_energy_gradients, predict_structure

    model, atoms = cuau_model, cuau_frames[2]
    w = model.coefficients_ * model.delta_**2
    ref = predict_structure(
        model.descriptor_.features_and_derivatives(atoms),
        model.sparse_features_,
        model.sparse_numbers_,
        w,
        model.zeta,
    )

    def gradient(q, numbers):
        return local_energy_gradients(
            q, numbers, model.sparse_features_, model.sparse_numbers_, w, model.zeta
        )

    centres = np.array([5, 1, 9])
    eps, forces, virial = model.descriptor_.contract_derivatives(atoms, gradient)
    np.testing.assert_allclose(eps, ref["energies"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forces, ref["forces"], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(virial, ref["virial"], rtol=1e-11, atol=1e-13)
    part, _, _ = model.descriptor_.contract_derivatives(atoms, gradient, centres)
    np.testing.assert_allclose(part, ref["energies"][centres], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["nacl", "molecule", "small_cell"])
def test_numba_engine_equals_dscribe(case, nacl_rattled):
    """The compiled GTO expansion gives DScribe's descriptor, derivatives and
    contraction: every array, for a centre subset in arbitrary order too."""
    if case == "nacl":
        atoms, species = nacl_rattled, ["Na", "Cl"]
    elif case == "molecule":
        atoms, species = molecule("CH3CH2OH"), ["H", "C", "O"]
    else:  # primitive cell far smaller than the cutoff: many images of each atom
        atoms, species = bulk("Si"), ["Si"]
        atoms.rattle(0.05, seed=3)
    fast = small_soap(species=species)
    ref = small_soap(species=species, engine="dscribe")
    np.testing.assert_allclose(fast.features(atoms), ref.features(atoms), atol=1e-11)
    centres = np.array([1, 0]) if len(atoms) == 2 else np.array([3, 0, 5])
    for subset in (None, centres):
        a = fast.features_and_derivatives(atoms, centres=subset)
        b = ref.features_and_derivatives(atoms, centres=subset)
        np.testing.assert_array_equal(a.centre, b.centre)
        np.testing.assert_array_equal(a.neighbour, b.neighbour)
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.features, b.features, atol=1e-11)
        scale = np.abs(b.dq_dr).max()
        np.testing.assert_allclose(a.dq_dr, b.dq_dr, atol=1e-10 * scale)
        np.testing.assert_allclose(a.dq_dstrain, b.dq_dstrain, atol=1e-10 * scale)

    rng = np.random.default_rng(0)
    weights = rng.normal(size=fast.n_features)

    def gradient(q, numbers):  # a nonlinear local energy: (w.q)^2
        s = q @ weights
        return s**2, 2.0 * s[:, None] * weights[None, :]

    for subset in (None, centres):
        ea, fa, va = fast.contract_derivatives(atoms, gradient, subset)
        eb, fb, vb = ref.contract_derivatives(atoms, gradient, subset)
        np.testing.assert_allclose(ea, eb, rtol=1e-10, atol=1e-10 * np.abs(eb).max())
        np.testing.assert_allclose(fa, fb, atol=1e-10 * np.abs(fb).max())
        np.testing.assert_allclose(va, vb, atol=1e-10 * np.abs(vb).max())


def test_engine_is_validated():
    with pytest.raises(InvalidParameterError, match="'engine'"):
        small_soap(species=["Cu"], engine="fortran").features(bulk("Cu"))


def _features_in_child(soap, atoms):
    return soap.features(atoms)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_computes_descriptors(nacl_rattled):
    """A process forked after the parent ran the compiled (OpenMP) loops must not
    abort: it runs serial copies of the kernels."""
    soap = small_soap(species=["Na", "Cl"])
    expected = soap.features(nacl_rattled)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_features_in_child, (soap, nacl_rattled)).get(timeout=300)
    np.testing.assert_allclose(got, expected, atol=1e-12)
