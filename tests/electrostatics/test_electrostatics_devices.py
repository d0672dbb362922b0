"""The numeric functions on other array namespaces, and the calculators' ``device`` option.

``array_api_strict`` is the reference namespace: the functions must run on it
without anything library-specific and agree with the NumPy path (numba kernels)
to 1e-10 relative. The GPU tests run only where CuPy imports and sees a device.
"""

from __future__ import annotations

import logging
import sys
import warnings

import array_api_strict as xps
import numpy as np
import pytest
from ase.build import bulk

from gapkit.backend import Backend, cuda_available
from gapkit.electrostatics import PME, Coulomb, Ewald, calculator_from_dict
from gapkit.electrostatics import calculators as calculators_module
from gapkit.electrostatics.ewald import ewald_reciprocal
from gapkit.electrostatics.pme import pme_reciprocal
from gapkit.electrostatics.realspace import pair_sum, wrap_positions
from gapkit.electrostatics.splines import bspline_weights, bspline_weights_xp
from gapkit.exceptions import DeviceUnavailableError, InvalidParameterError, NonNeutralWarning

NACL = {"Na": 1.0, "Cl": -1.0}
RTOL = 1e-10
CUDA_OK, CUDA_WHY = cuda_available()


def assert_close(actual, expected, rtol=RTOL):
    """Equal to ``rtol`` relative to the largest entry of ``expected``."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def random_arrays(seed, n_atoms=14, neutral=True):
    """Random charges in a random triclinic cell; positions not wrapped."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * 9.0 + rng.uniform(-3.0, 3.0, size=(3, 3))
    positions = rng.random((n_atoms, 3)) @ cell + rng.normal(scale=4.0, size=(n_atoms, 3))
    charges = rng.normal(size=n_atoms)
    if neutral:
        charges -= charges.mean()
    return positions, cell, charges


def strict(*arrays):
    return tuple(xps.asarray(a) for a in arrays)


def is_strict(x):
    return type(x).__module__.startswith("array_api_strict")


def nacl(repeat=1):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=2)
    return atoms


# ---------------------------------------------------------------- array_api_strict


@pytest.mark.parametrize("order", [2, 4, 5, 6, 7, 8])
def test_bspline_weights_match_numba(order):
    w = np.random.default_rng(0).random(40)
    ref_w, ref_d = bspline_weights(w, order)
    got_w, got_d = bspline_weights_xp(xps, xps.asarray(w), order)
    assert is_strict(got_w) and is_strict(got_d)
    assert_close(got_w, ref_w)
    assert_close(got_d, ref_d)


def test_wrap_positions_strict():
    positions, cell, _ = random_arrays(1)
    frac, wrapped = wrap_positions(xps.asarray(positions), cell)
    ref_frac, ref_wrapped = wrap_positions(positions, cell)
    assert is_strict(frac) and is_strict(wrapped)
    assert_close(frac, ref_frac)
    assert_close(wrapped, ref_wrapped)


@pytest.mark.parametrize("neutral", [True, False])
def test_ewald_reciprocal_strict(neutral):
    positions, cell, charges = random_arrays(2, neutral=neutral)
    ref = ewald_reciprocal(positions, cell, charges, 0.5, 1.3)
    got = ewald_reciprocal(*strict(positions, cell, charges), 0.5, 1.3)
    for g, r in zip(got, ref, strict=True):
        assert is_strict(g)
        assert_close(g, r)


@pytest.mark.parametrize(
    ("mesh", "order"),
    [((12, 13, 14), 4), ((12, 12, 12), 5), ((10, 11, 12), 6), ((9, 10, 11), 7), ((9, 10, 8), 8)],
)
@pytest.mark.parametrize("neutral", [True, False])
def test_pme_reciprocal_strict(mesh, order, neutral):
    positions, cell, charges = random_arrays(3, neutral=neutral)
    ref = pme_reciprocal(positions, cell, charges, 0.45, mesh, order)
    got = pme_reciprocal(*strict(positions, cell, charges), 0.45, mesh, order)
    for g, r in zip(got, ref, strict=True):
        assert is_strict(g)
        assert_close(g, r)


def test_pme_reciprocal_strict_without_virial_and_empty():
    positions, cell, charges = random_arrays(4)
    energies, forces, virial = pme_reciprocal(
        *strict(positions, cell, charges), 0.45, (10, 10, 10), 6, compute_virial=False
    )
    ref = pme_reciprocal(positions, cell, charges, 0.45, (10, 10, 10), 6, compute_virial=False)
    assert_close(energies, ref[0])
    assert_close(forces, ref[1])
    assert np.all(np.asarray(virial) == 0.0) and virial.shape == (6,)
    empty = pme_reciprocal(
        xps.zeros((0, 3), dtype=xps.float64),
        cell,
        xps.zeros(0, dtype=xps.float64),
        0.45,
        (10, 10, 10),
        6,
    )
    assert [a.shape for a in empty] == [(0,), (0, 3), (6,)]


def test_pair_sum_strict():
    positions, _, charges = random_arrays(5, n_atoms=20)
    ref = pair_sum(positions, charges)
    got = pair_sum(*strict(positions, charges))
    for g, r in zip(got, ref, strict=True):
        assert is_strict(g)
        assert_close(g, r)


def test_calculators_on_a_non_numpy_backend(monkeypatch):
    """The calculators' device plumbing, with array_api_strict standing in for CuPy."""
    atoms = nacl()
    calcs = {
        "pme": lambda device: PME(
            charges=NACL, alpha=0.4, cutoff=7.0, mesh=(12, 12, 12), order=5, device=device
        ),
        "ewald": lambda device: Ewald(charges=NACL, accuracy=1e-6, device=device),
    }
    ref = {}
    for name, make in calcs.items():
        atoms.calc = make("cpu")
        ref[name] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    monkeypatch.setattr(
        calculators_module, "resolve_device", lambda device, owner: Backend("cuda", xps)
    )
    for name, make in calcs.items():
        atoms.calc = make("cuda")
        energy, forces, stress = (
            atoms.get_potential_energy(),
            atoms.get_forces(),
            atoms.get_stress(),
        )
        assert atoms.calc.device_ == "cuda"
        assert isinstance(energy, float)
        assert type(forces) is np.ndarray and type(stress) is np.ndarray
        assert energy == pytest.approx(ref[name][0], rel=RTOL)
        assert_close(forces, ref[name][1])
        assert_close(stress, ref[name][2])
    molecule = nacl()
    molecule.pbc = False
    molecule.calc = Coulomb(charges=NACL, device="cuda")
    e_dev = molecule.get_potential_energy()
    f_dev = molecule.get_forces()
    molecule.calc = Coulomb(charges=NACL)
    assert e_dev == pytest.approx(molecule.get_potential_energy(), rel=RTOL)
    assert_close(f_dev, molecule.get_forces())


# ---------------------------------------------------------------- the device option


@pytest.mark.parametrize("method", [Ewald, PME, Coulomb])
@pytest.mark.parametrize("device", ["gpu", "CUDA", None, 0])
def test_bad_device_is_rejected_at_construction(method, device):
    with pytest.raises(
        InvalidParameterError,
        match=f"{method.__name__}: 'device' must be one of 'cpu', 'cuda', 'auto'",
    ):
        method(device=device)


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail, as on a machine without CuPy."""
    monkeypatch.setitem(sys.modules, "cupy", None)


@pytest.mark.parametrize("method", [Ewald, PME])
def test_cuda_without_cupy_raises(no_cupy, method):
    atoms = nacl()
    atoms.calc = method(charges=NACL, device="cuda")
    with pytest.raises(DeviceUnavailableError, match=f"{method.__name__}: device='cuda'.*CuPy"):
        atoms.get_potential_energy()


def test_cuda_without_cupy_raises_coulomb(no_cupy):
    atoms = nacl()
    atoms.pbc = False
    atoms.calc = Coulomb(charges=NACL, device="cuda")
    with pytest.raises(DeviceUnavailableError, match="Coulomb: device='cuda'"):
        atoms.get_forces()


def test_auto_picks_cpu_without_cupy_and_says_so(no_cupy, caplog):
    atoms = nacl()
    atoms.calc = PME(charges=NACL, accuracy=1e-6)
    e_cpu = atoms.get_potential_energy()
    assert atoms.calc.device_ == "cpu"
    atoms.calc = PME(charges=NACL, accuracy=1e-6, device="auto")
    with caplog.at_level(logging.INFO, logger="gapkit"):
        e_auto = atoms.get_potential_energy()
    assert atoms.calc.device_ == "cpu"
    assert e_auto == e_cpu
    assert "PME: device='auto' chose the CPU" in caplog.text


@pytest.mark.skipif(CUDA_OK, reason="a GPU is present: 'auto' picks it")
def test_auto_is_cpu_on_this_machine():
    atoms = nacl()
    atoms.calc = Ewald(charges=NACL, device="auto")
    atoms.get_potential_energy()
    assert atoms.calc.device_ == "cpu"


@pytest.mark.parametrize("method", [Ewald, PME, Coulomb])
def test_device_round_trips_through_todict(method):
    calc = method(charges=NACL, device="auto")
    d = calc.todict()
    assert d["device"] == "auto"
    assert calculator_from_dict(d).parameters["device"] == "auto"
    assert method(charges=NACL).todict()["device"] == "cpu"
    legacy = {k: v for k, v in d.items() if k != "device"}  # files written before the option
    assert calculator_from_dict(legacy).parameters["device"] == "cpu"


# ---------------------------------------------------------------- GPU (CuPy)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason=f"GPU: not available ({CUDA_WHY})")
class TestCuda:
    """Results on "cuda" equal those on "cpu" to 1e-10 relative."""

    @pytest.fixture(autouse=True)
    def _quiet(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonNeutralWarning)
            yield

    @pytest.mark.parametrize("method", [PME, Ewald])
    @pytest.mark.parametrize("accuracy", [1e-5, 1e-7])
    def test_calculators_match_cpu(self, method, accuracy):
        atoms = nacl(repeat=3)
        results = {}
        for device in ("cpu", "cuda"):
            atoms.calc = method(charges=NACL, accuracy=accuracy, device=device)
            results[device] = (
                atoms.get_potential_energy(),
                atoms.get_potential_energies(),
                atoms.get_forces(),
                atoms.get_stress(),
            )
            assert atoms.calc.device_ == device
        cpu, gpu = results["cpu"], results["cuda"]
        assert isinstance(gpu[0], float)
        assert gpu[0] == pytest.approx(cpu[0], rel=RTOL)
        for g, c in zip(gpu[1:], cpu[1:], strict=True):
            assert type(g) is np.ndarray
            assert_close(g, c)

    def test_coulomb_matches_cpu(self):
        atoms = nacl(repeat=2)
        atoms.pbc = False
        atoms.calc = Coulomb(charges=NACL)
        e_cpu, f_cpu = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = Coulomb(charges=NACL, device="cuda")
        assert atoms.get_potential_energy() == pytest.approx(e_cpu, rel=RTOL)
        assert_close(atoms.get_forces(), f_cpu)

    @pytest.mark.parametrize("order", [4, 5, 6, 7, 8])
    @pytest.mark.parametrize("neutral", [True, False])
    def test_pme_reciprocal_kernels_match_numba(self, order, neutral):
        import cupy

        positions, cell, charges = random_arrays(7, n_atoms=3000, neutral=neutral)
        mesh = (30, 31, 32)
        ref = pme_reciprocal(positions, cell, charges, 0.45, mesh, order)
        got = pme_reciprocal(
            cupy.asarray(positions), cell, cupy.asarray(charges), 0.45, mesh, order
        )
        for g, r in zip(got, ref, strict=True):
            assert isinstance(g, cupy.ndarray)
            assert_close(g.get(), r)

    def test_auto_picks_the_gpu(self):
        atoms = nacl()
        atoms.calc = PME(charges=NACL, device="auto")
        atoms.get_potential_energy()
        assert atoms.calc.device_ == "cuda"
