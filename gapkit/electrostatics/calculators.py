"""ASE calculators for fixed-charge electrostatics: Ewald, PME and Coulomb.

Each calculator validates its parameters and the structure once, at the entry
point (:meth:`calculate`), turns charges per species or per atom into an array,
asks :mod:`.tuning` for the parameters, and hands arrays to the numerical
modules (:mod:`.realspace`, :mod:`.ewald`, :mod:`.pme`). Results are in eV,
eV/Å and eV/Å³ (ASE sign and Voigt order), using
:data:`gapkit.units.COULOMB_CONSTANT`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
import warnings

import numpy as np
from ase.calculators.calculator import (
    Calculator,
    CalculatorSetupError,
    all_changes,
)
from ase.stress import full_3x3_to_voigt_6_stress

from ..backend import DEVICES, Backend, resolve_device, to_numpy
from ..exceptions import InvalidParameterError, InvalidStructureError, NonNeutralWarning
from ..units import COULOMB_CONSTANT, VOIGT_PAIRS
from ._lattice import reduce_cell
from .ewald import ewald_reciprocal
from .pme import pme_reciprocal
from .potentials import background_energy, self_energy
from .realspace import pair_sum, real_space_sum, wrap_positions
from .tuning import MIN_ACCURACY, PME_ERROR_TABLE, _tune_ewald, _tune_pme

__all__ = ["Ewald", "PME", "Coulomb", "calculator_from_dict"]

#: Net charge (relative to Σ|q_i|, at least 1 e) above which a cell counts as charged.
_NEUTRAL_TOLERANCE = 1e-8

#: Keyword arguments of :class:`ase.calculators.calculator.Calculator` itself, which
#: the constructors pass on (they are not calculator parameters and not in ``todict()``).
_ASE_ARGUMENTS = ("restart", "ignore_bad_restart_file", "label", "atoms", "directory")


def _is_positive_number(value):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@functools.cache
def _parameter_names(cls) -> tuple[str, ...]:
    """The parameters of calculator class ``cls``: the named arguments of its ``__init__``."""
    signature = inspect.signature(cls.__init__)
    return tuple(
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


def _unknown_keys_message(owner, unknown, allowed, what):
    """``owner: unknown parameter(s) 'x' (did you mean 'y'?); allowed: ...``."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"{owner}: unknown {what}{plural} {', '.join(hints)}; allowed: "
        f"{', '.join(map(repr, allowed))}."
    )


def _validate_parameters(owner, params, allowed=None, extra=()):
    """Check every constructor parameter; raise InvalidParameterError naming the first bad one.

    ``allowed`` (when given) lists the parameter names; any other key, except
    those in ``extra``, is refused with the allowed names and a close match.
    """
    if allowed is not None:
        unknown = [k for k in params if k not in allowed and k not in extra]
        if unknown:
            raise InvalidParameterError(
                _unknown_keys_message(owner, unknown, list(allowed), "parameter")
            )
    charges = params.get("charges")
    if charges is not None:
        if isinstance(charges, dict):
            for key, value in charges.items():
                if not isinstance(key, str) or not (
                    isinstance(value, numbers.Real) and math.isfinite(value)
                ):
                    raise InvalidParameterError(
                        f"{owner}: 'charges' as a dict must map chemical symbols to finite "
                        f"numbers (e.g. {{'Na': 1.0, 'Cl': -1.0}}); got {key!r}: {value!r}."
                    )
        else:
            arr = np.asarray(charges)
            if (
                arr.ndim != 1
                or not np.issubdtype(arr.dtype, np.number)
                or not np.all(np.isfinite(arr))
            ):
                raise InvalidParameterError(
                    f"{owner}: 'charges' must be None, a dict of charges per chemical symbol, "
                    f"or a 1-D array of finite charges per atom; got {charges!r}."
                )
    if "accuracy" in params:
        acc = params["accuracy"]
        if not (_is_positive_number(acc) and MIN_ACCURACY <= acc < 1.0):
            raise InvalidParameterError(
                f"{owner}: 'accuracy' must be a number in (0, 1), the RMS force error relative "
                f"to two unit charges 1 Å apart (1e-5 means 1.44e-4 eV/Å), and at least "
                f"{MIN_ACCURACY:g} (what double precision resolves); got {acc!r}."
            )
    for name in ("alpha", "cutoff", "kcutoff"):
        value = params.get(name)
        if value is not None and not _is_positive_number(value):
            raise InvalidParameterError(
                f"{owner}: '{name}' must be None (chosen from 'accuracy') or a positive "
                f"finite number; got {value!r}."
            )
    if params.get("order") is not None:
        order = params["order"]
        if isinstance(order, bool) or not (
            isinstance(order, numbers.Integral) and int(order) in PME_ERROR_TABLE
        ):
            raise InvalidParameterError(
                f"{owner}: 'order' must be None (chosen from 'accuracy') or an integer "
                f"B-spline order in 4..8; got {order!r}."
            )
    mesh = params.get("mesh")
    if mesh is not None:
        ok = (
            np.ndim(mesh) == 1
            and len(mesh) == 3
            and all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in mesh)
        )
        order = params.get("order")
        order = 6 if order is None else order
        if not ok or min(int(k) for k in mesh) < int(order):
            raise InvalidParameterError(
                f"{owner}: 'mesh' must be None or three integers, each ≥ the spline order "
                f"{order}; got {mesh!r}."
            )
    workers = params.get("workers")
    if workers is not None and not (isinstance(workers, numbers.Integral) and workers >= 1):
        raise InvalidParameterError(
            f"{owner}: 'workers' must be None (all CPUs) or an integer ≥ 1; got {workers!r}."
        )
    if "device" in params:
        device = params["device"]
        if not (isinstance(device, str) and device in DEVICES):
            raise InvalidParameterError(
                f"{owner}: 'device' must be one of {', '.join(map(repr, DEVICES))} (\"auto\" "
                f"picks the GPU when CuPy sees one); got {device!r}."
            )


def _charges_array(owner, charges, atoms):
    """Charges per atom (copy) from None, a dict per symbol or an array per atom."""
    n = len(atoms)
    if charges is None:
        if n and not atoms.has("initial_charges"):
            symbols = sorted(set(atoms.get_chemical_symbols()))
            example = "{" + ", ".join(f"{s!r}: q_{s}" for s in symbols) + "}"
            raise InvalidParameterError(
                f"{owner}: the structure has no charges: the calculator was built without "
                "'charges' and the atoms carry no initial charges. Give them per species, "
                f"{owner}(charges={example}) in e, or per atom with "
                "atoms.set_initial_charges([...]) (explicit zeros mean no Coulomb energy)."
            )
        q = np.array(atoms.get_initial_charges(), dtype=float)
    elif isinstance(charges, dict):
        symbols = atoms.get_chemical_symbols()
        missing = sorted(set(symbols) - set(charges))
        if missing:
            raise CalculatorSetupError(
                f"{owner}: no charge given for species {missing}; 'charges' has "
                f"{sorted(charges)}. Add them to the dict."
            )
        q = np.array([charges[s] for s in symbols], dtype=float)
    else:
        q = np.array(charges, dtype=float)
        if q.shape != (n,):
            raise InvalidParameterError(
                f"{owner}: 'charges' per atom must have shape ({n},) for these atoms; "
                f"got shape {q.shape}."
            )
    if not np.all(np.isfinite(q)):
        raise InvalidStructureError(f"{owner}: the charges contain NaN or infinite values.")
    return q


def _validate_structure(owner, atoms, periodic):
    """Check positions, periodicity and cell; return the cell volume (0 if not periodic)."""
    pos = atoms.positions
    bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
    if len(bad):
        raise InvalidStructureError(
            f"{owner}: atoms.positions contain NaN or infinite values (atoms {bad[:5].tolist()})."
        )
    pbc = [bool(p) for p in atoms.pbc]
    if not periodic:
        if any(pbc):
            raise InvalidStructureError(
                f"{owner}: is a plain pair sum for non-periodic systems, but pbc={pbc}. "
                "Use Ewald or PME for periodic cells, or set atoms.pbc = False."
            )
        return 0.0
    if not all(pbc):
        raise InvalidStructureError(
            f"{owner}: needs a cell periodic in all three directions (pbc all True); got "
            f"pbc={pbc}. Use Coulomb for molecules and other non-periodic systems."
        )
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise InvalidStructureError(
            f"{owner}: atoms.cell contains NaN or infinite values ({cell.tolist()}); give "
            "three finite lattice vectors in Å."
        )
    volume = abs(float(np.linalg.det(cell)))
    scale = float(np.prod(np.linalg.norm(cell, axis=1)))
    if volume <= 1e-10 * max(scale, 1e-300) or volume == 0.0:
        raise InvalidStructureError(
            f"{owner}: the cell has zero volume ({volume:.3g} Å³); an Ewald sum needs three "
            "linearly independent lattice vectors. Use Coulomb for molecules and other "
            "non-periodic systems."
        )
    return volume


def _warn_if_charged(owner, charges):
    total = float(charges.sum())
    if abs(total) > _NEUTRAL_TOLERANCE * max(1.0, float(np.abs(charges).sum())):
        warnings.warn(
            f"{owner}: the cell carries a net charge Q = {total:.6g} e; a uniform "
            "neutralising background is added (energy -π Q² / (2 V α²) · k_e).",
            NonNeutralWarning,
            stacklevel=4,
        )


def _voigt_stress(virial, volume):
    full = np.zeros((3, 3))
    for value, (a, b) in zip(virial, VOIGT_PAIRS, strict=True):
        full[a, b] = full[b, a] = value
    return full_3x3_to_voigt_6_stress(COULOMB_CONSTANT * full / volume)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_jsonable(v) for v in np.asarray(value).tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


class _FixedChargeCalculator(Calculator):
    """Shared ASE plumbing: parameters, charges, validation, results, serialisation."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    #: Whether the method needs a 3-D periodic cell.
    _periodic = True

    def __init__(self, **params):
        _validate_parameters(
            type(self).__name__, params, _parameter_names(type(self)), _ASE_ARGUMENTS
        )
        super().__init__(**params)

    def todict(self):
        """JSON-serialisable constructor parameters, with the class name under ``"class"``.

        Returns
        -------
        dict
            ``{"class": name, **parameters}``; arrays become lists. Rebuild the
            calculator with :func:`calculator_from_dict`.
        """
        out = {"class": type(self).__name__}
        for key, value in self.parameters.items():
            out[key] = _jsonable(value)
        return out

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        """Compute energy, per-atom energies, forces and (3-D periodic) stress.

        Parameters
        ----------
        atoms : ase.Atoms, default=None
            The structure (the attached one when None).
        properties : list of str, default=None
            Requested properties; all implemented ones are computed anyway.
        system_changes : list of str, default=all_changes
            What changed since the last call (ASE bookkeeping).

        Raises
        ------
        InvalidStructureError
            NaN or infinite positions or cell, wrong periodicity, a zero-volume
            cell or overlapping atoms.
        InvalidParameterError
            No ``charges`` given and the atoms carry no initial charges; a
            parameter changed (``set``) to a bad value or an unknown name; or
            parameters whose mesh, images or wave vectors would not fit in memory.
        CalculatorSetupError
            A species without a charge in the ``charges`` dict.

        Notes
        -----
        All-zero charges (including charges so small that Σq² underflows) give
        zero energy, forces and stress without tuning (``tuned_`` is None). A
        periodic cell that is a skewed basis of its lattice is replaced by its
        Minkowski-reduced basis (``cell_``) and the positions are wrapped into
        it; the results, reported for the atoms as given, do not change.
        """
        owner = type(self).__name__
        _validate_parameters(owner, dict(self.parameters), _parameter_names(type(self)))
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        volume = _validate_structure(owner, atoms, self._periodic)
        charges = _charges_array(owner, self.parameters.get("charges"), atoms)
        positions, cell = atoms.positions, None
        if self._periodic:
            cell, positions = self._reduced_lattice(atoms)
        if not float(np.dot(charges, charges)) > 0.0:  # no charge: nothing to compute
            self.tuned_ = None
            self._store(
                np.zeros(len(atoms)),
                np.zeros((len(atoms), 3)),
                np.zeros(6) if self._periodic else None,
                volume,
            )
            return
        if self._periodic:
            _warn_if_charged(owner, charges)
        backend = self._backend(owner)
        energies, forces, virial = self._compute(positions, cell, charges, volume, backend)
        energies = COULOMB_CONSTANT * np.asarray(energies, dtype=float)
        forces = COULOMB_CONSTANT * np.asarray(forces, dtype=float)
        energy = float(energies.sum())
        if not (math.isfinite(energy) and np.all(np.isfinite(forces))):
            raise InvalidStructureError(
                f"{owner}: the energy is not finite; two atoms probably sit on the same "
                "position (or on periodic images of each other)."
            )
        self._store(energies, forces, virial, volume)

    def _store(self, energies, forces, virial, volume):
        """Fill ``self.results`` from per-atom energies and forces (eV) and the virial."""
        energy = float(energies.sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": energies,
            "forces": forces,
        }
        if virial is not None:
            self.results["stress"] = _voigt_stress(virial, volume)

    def _reduced_lattice(self, atoms) -> tuple[np.ndarray, np.ndarray]:
        """The cell the sums use and the positions to hand them; sets ``cell_``.

        The Minkowski-reduced basis of ``atoms.cell`` (``atoms.cell`` itself unless
        it is skewed), cached per cell; when it differs, the positions are wrapped
        into it (same atoms, same order), otherwise they are ``atoms.positions``.
        """
        cell = atoms.cell.array
        key = cell.tobytes()
        cached = getattr(self, "_reduction", None)
        if cached is None or cached[0] != key:
            reduced, op = reduce_cell(cell)
            cached = (
                key,
                np.array(reduced, dtype=float),
                not np.array_equal(op, np.eye(3, dtype=int)),
            )
            self._reduction = cached
        _, reduced, changed = cached
        self.cell_ = reduced.copy()
        if not changed:
            return reduced, atoms.positions
        return reduced, wrap_positions(atoms.positions, reduced)[1]

    def _backend(self, owner: str) -> Backend:
        """The backend of the ``device`` parameter, resolved once per value; sets ``device_``."""
        device = self.parameters.get("device", "cpu")
        cached = getattr(self, "_resolved", None)
        if cached is None or cached[0] != device:
            cached = (device, resolve_device(device, owner))
            self._resolved = cached
        self.device_ = cached[1].device
        return cached[1]

    def _compute(self, positions, cell, charges, volume, backend):  # pragma: no cover - abstract
        raise NotImplementedError


def _to_backend(backend: Backend, positions: np.ndarray, charges: np.ndarray) -> tuple:
    """Positions and charges as float64 arrays of the backend (no copy on NumPy)."""
    if backend.is_numpy:
        return positions, charges
    xp = backend.xp
    return backend.asarray(positions, dtype=xp.float64), backend.asarray(charges, dtype=xp.float64)


def _to_host(result: tuple) -> tuple:
    """A tuple of backend arrays as NumPy arrays (waits for the device)."""
    return tuple(to_numpy(r) for r in result)


class Ewald(_FixedChargeCalculator):
    """Direct Ewald sum for fixed point charges in a 3-D periodic cell (the reference).

    Works for any cell shape, including triclinic cells and cells smaller than
    the real-space cut-off (all periodic images are enumerated). The cost grows
    as N^{3/2}; use :class:`PME` for large systems.

    Parameters
    ----------
    charges : dict or array-like of shape (n_atoms,), default=None
        Charges in e: per chemical symbol (``{"Na": 1.0, "Cl": -1.0}``), per
        atom, or None to read ``atoms.get_initial_charges()`` (an error when the
        atoms carry none). All-zero charges give zero energy, forces and stress.
    accuracy : float, default=1e-5
        Target RMS force error relative to the force between two unit charges
        1 Å apart (1e-5 means 1.44e-4 eV/Å), at least 1e-15; see
        :mod:`gapkit.electrostatics.tuning`.
    alpha : float, default=None
        Splitting parameter in Å⁻¹ (chosen from ``accuracy`` when None).
    cutoff : float, default=None
        Real-space cut-off in Å (chosen from ``accuracy`` when None).
    kcutoff : float, default=None
        Cut-off on ``|m|`` in Å⁻¹, reciprocal lattice without 2π (chosen when None).
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the reciprocal-space sum runs: ``"cpu"`` (NumPy), ``"cuda"``
        (CuPy on an NVIDIA GPU; :class:`~gapkit.exceptions.DeviceUnavailableError`
        at the first calculation when CuPy is missing or sees no device) or
        ``"auto"`` (the GPU when CuPy imports and sees one, else the CPU; the
        choice is logged on the ``"gapkit"`` logger). The real-space sum always
        runs on the CPU (numba). Results are NumPy arrays in every case.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator` (e.g. ``label``).

    Attributes
    ----------
    tuned_ : EwaldParameters or None
        The parameters used in the last calculation (None when all charges are
        zero: nothing is computed).
    cell_ : ndarray of shape (3, 3)
        The lattice vectors the last calculation used: ``atoms.cell``, or its
        Minkowski-reduced basis (:func:`~gapkit.electrostatics.reduce_cell`)
        when ``atoms.cell`` is a skewed basis of the lattice. Energy, forces and
        stress do not depend on this choice; the cost does.
    device_ : {"cpu", "cuda"}
        The device the last calculation ran on (``device`` resolved).

    Notes
    -----
    Energy in eV, with k_e = :data:`gapkit.units.COULOMB_CONSTANT`:

    .. math::

        E = k_e\\Bigl[\\tfrac12\\sum_{i,j,\\mathbf n}' q_iq_j
            \\frac{\\operatorname{erfc}(\\alpha r)}{r}
          + \\sum_{0<|\\mathbf m|\\le m_c,\\ \\text{half}}
            \\frac{e^{-\\pi^2m^2/\\alpha^2}}{\\pi V m^2}|S(\\mathbf m)|^2
          - \\frac{\\alpha}{\\sqrt\\pi}\\sum_i q_i^2 - \\frac{\\pi Q^2}{2V\\alpha^2}\\Bigr].

    The per-atom energies are ``½ q_i φ_i`` (potential at atom i, including the
    self and background terms). Forces and the stress ``σ = (1/V) ∂E/∂ε`` are
    the exact derivatives of this energy.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from gapkit.electrostatics import Ewald
    >>> atoms = bulk("NaCl", "rocksalt", a=5.64)
    >>> atoms.calc = Ewald(charges={"Na": 1.0, "Cl": -1.0}, accuracy=1e-8)
    >>> round(atoms.get_potential_energy() / len(atoms), 4)  # -k_e M / (2 d) per ion
    -4.4618
    """

    def __init__(
        self,
        charges=None,
        *,
        accuracy=1e-5,
        alpha=None,
        cutoff=None,
        kcutoff=None,
        device="cpu",
        **kwargs,
    ):
        super().__init__(
            charges=charges,
            accuracy=accuracy,
            alpha=alpha,
            cutoff=cutoff,
            kcutoff=kcutoff,
            device=device,
            **kwargs,
        )

    def _compute(self, positions, cell, charges, volume, backend):
        p = self.parameters
        tuned = _tune_ewald(
            type(self).__name__,
            cell,
            charges,
            p["accuracy"],
            alpha=p["alpha"],
            cutoff=p["cutoff"],
            kcutoff=p["kcutoff"],
        )
        self.tuned_ = tuned
        # the reciprocal sum first: on a GPU it can run while the CPU does real space
        xpos, q = _to_backend(backend, positions, charges)
        reciprocal = ewald_reciprocal(xpos, cell, q, tuned.alpha, tuned.kcutoff)
        e_r, f_r, v_r = real_space_sum(positions, cell, charges, tuned.alpha, tuned.cutoff)
        e_k, f_k, v_k = _to_host(reciprocal)
        return _assemble(charges, volume, tuned.alpha, e_r + e_k, f_r + f_k, v_r + v_k)


class PME(_FixedChargeCalculator):
    """Smooth particle-mesh Ewald (SPME) for fixed point charges in a 3-D periodic cell.

    Energy, per-atom energies, forces and stress for any cell shape, in
    O(N log N) time.

    Parameters
    ----------
    charges : dict or array-like of shape (n_atoms,), default=None
        Charges in e: per chemical symbol, per atom, or None to read
        ``atoms.get_initial_charges()`` (an error when the atoms carry none).
        All-zero charges give zero energy, forces and stress.
    accuracy : float, default=1e-5
        Target RMS force error relative to the force between two unit charges
        1 Å apart (1e-5 means 1.44e-4 eV/Å), at least 1e-15; see
        :mod:`gapkit.electrostatics.tuning`.
    order : int, default=None
        Cardinal B-spline order p, 4 to 8. None lets the tuner pick the fastest
        order for ``accuracy`` (6 when alpha, cutoff or mesh is given).
    alpha : float, default=None
        Splitting parameter in Å⁻¹ (chosen from ``accuracy`` when None).
    cutoff : float, default=None
        Real-space cut-off in Å (chosen from ``accuracy`` when None).
    mesh : sequence of 3 int, default=None
        Mesh points along the three lattice vectors (chosen when None): those of
        ``atoms.cell``, or of its Minkowski-reduced basis when ``atoms.cell`` is
        a skewed basis of its lattice (see ``cell_``).
    workers : int, default=None
        Threads for the FFTs on the CPU (None: all CPUs). The numba kernels use
        numba's thread count (``NUMBA_NUM_THREADS``).
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the mesh (reciprocal-space) part runs: ``"cpu"`` (numba kernels
        and :mod:`scipy.fft`), ``"cuda"`` (CUDA kernels for charge spreading and
        force gathering and ``cupy.fft``, through CuPy on an NVIDIA GPU;
        :class:`~gapkit.exceptions.DeviceUnavailableError` at the first
        calculation when CuPy is missing or sees no device) or ``"auto"`` (the
        GPU when CuPy imports and sees one, else the CPU; the choice is logged on
        the ``"gapkit"`` logger). The real-space sum always runs on the CPU
        (numba), after the GPU work is launched, so the two can overlap.
        Results are NumPy arrays in every case, equal on both devices to
        round-off (1e-10 relative is checked).
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Attributes
    ----------
    tuned_ : PMEParameters or None
        The parameters used in the last calculation (None when all charges are
        zero: nothing is computed).
    cell_ : ndarray of shape (3, 3)
        The lattice vectors the last calculation used and ``tuned_.mesh`` is
        laid along: ``atoms.cell``, or its Minkowski-reduced basis
        (:func:`~gapkit.electrostatics.reduce_cell`) when ``atoms.cell`` is a
        skewed basis of the lattice. Energy, forces and stress do not depend on
        this choice; the mesh does.
    device_ : {"cpu", "cuda"}
        The device the last calculation ran on (``device`` resolved).

    Notes
    -----
    The energy is that of :class:`Ewald` with the reciprocal sum replaced by
    the SPME mesh sum of Essmann et al. (1995):

    .. math::

        E_{rec} = \\frac{k_e}{2}\\sum_{\\mathbf m\\neq0}
        \\frac{e^{-\\pi^2m^2/\\alpha^2}}{\\pi V m^2}\\,B(\\mathbf m)\\,
        |\\mathrm{FFT}(Q)(\\mathbf m)|^2,

    with Q the charge spread on the mesh by cardinal B-splines and B the
    product of the spline moduli; see :mod:`gapkit.electrostatics.pme`.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from gapkit.electrostatics import PME
    >>> atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    >>> atoms.calc = PME(charges={"Na": 1.0, "Cl": -1.0}, accuracy=1e-6)
    >>> round(atoms.get_potential_energy() / len(atoms), 4)
    -4.4618
    """

    def __init__(
        self,
        charges=None,
        *,
        accuracy=1e-5,
        order=None,
        alpha=None,
        cutoff=None,
        mesh=None,
        workers=None,
        device="cpu",
        **kwargs,
    ):
        super().__init__(
            charges=charges,
            accuracy=accuracy,
            order=order,
            alpha=alpha,
            cutoff=cutoff,
            mesh=mesh,
            workers=workers,
            device=device,
            **kwargs,
        )

    def _compute(self, positions, cell, charges, volume, backend):
        p = self.parameters
        tuned = _tune_pme(
            type(self).__name__,
            cell,
            charges,
            p["accuracy"],
            order=p["order"],
            alpha=p["alpha"],
            cutoff=p["cutoff"],
            mesh=p["mesh"],
        )
        self.tuned_ = tuned
        # the mesh part first: on a GPU it can run while the CPU does real space
        xpos, q = _to_backend(backend, positions, charges)
        reciprocal = pme_reciprocal(
            xpos, cell, q, tuned.alpha, tuned.mesh, tuned.order, workers=p["workers"]
        )
        e_r, f_r, v_r = real_space_sum(positions, cell, charges, tuned.alpha, tuned.cutoff)
        e_k, f_k, v_k = _to_host(reciprocal)
        return _assemble(charges, volume, tuned.alpha, e_r + e_k, f_r + f_k, v_r + v_k)


def _assemble(charges, volume, alpha, energies, forces, virial):
    """Add the self and background terms (Gaussian units)."""
    energies = energies + self_energy(charges, alpha) + background_energy(charges, volume, alpha)
    total = float(charges.sum())
    virial = virial.copy()
    virial[:3] += math.pi * total**2 / (2.0 * volume * alpha**2)
    return energies, forces, virial


class Coulomb(_FixedChargeCalculator):
    """Plain Coulomb pair sum for fixed point charges in a non-periodic system.

    Parameters
    ----------
    charges : dict or array-like of shape (n_atoms,), default=None
        Charges in e: per chemical symbol, per atom, or None to read
        ``atoms.get_initial_charges()`` (an error when the atoms carry none).
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the pair sum runs: ``"cpu"`` (numba), ``"cuda"`` (CuPy on an
        NVIDIA GPU, dense blocks of the pair matrix;
        :class:`~gapkit.exceptions.DeviceUnavailableError` at the first
        calculation when CuPy is missing or sees no device) or ``"auto"`` (the
        GPU when CuPy imports and sees one, else the CPU; the choice is logged on
        the ``"gapkit"`` logger). Results are NumPy arrays in every case.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Attributes
    ----------
    device_ : {"cpu", "cuda"}
        The device the last calculation ran on (``device`` resolved).

    Notes
    -----
    ``E = k_e ½ Σ_{i≠j} q_i q_j / r_ij``, per-atom energies ``k_e ½ q_i Σ_j q_j/r_ij``
    and ``F_i = -k_e q_i Σ_j q_j (r_j - r_i)/r_ij³``; O(N²) work. There is no
    stress (the system has no cell).

    Examples
    --------
    >>> from ase import Atoms
    >>> from gapkit.electrostatics import Coulomb
    >>> pair = Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.0]])
    >>> pair.calc = Coulomb(charges={"Na": 1.0, "Cl": -1.0})
    >>> round(pair.get_potential_energy(), 6)
    -7.199823
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces"]
    _periodic = False

    def __init__(self, charges=None, *, device="cpu", **kwargs):
        super().__init__(charges=charges, device=device, **kwargs)

    def _compute(self, positions, cell, charges, volume, backend):
        energies, forces = _to_host(pair_sum(*_to_backend(backend, positions, charges)))
        return energies, forces, None


_CLASSES = {cls.__name__: cls for cls in (Ewald, PME, Coulomb)}


def calculator_from_dict(d):
    """Rebuild a calculator from the output of its ``todict()``.

    Parameters
    ----------
    d : dict
        ``{"class": "Ewald" | "PME" | "Coulomb", **parameters}``, as returned by
        :meth:`Ewald.todict` (and the other calculators).

    Returns
    -------
    Ewald, PME or Coulomb
        A new calculator with the same parameters.

    Raises
    ------
    InvalidParameterError
        If ``d`` is not a dict, names no known class, has a key that is not a
        parameter of that class (the message lists the allowed keys), or a
        parameter with a bad value.

    Examples
    --------
    >>> import json
    >>> from gapkit.electrostatics import PME, calculator_from_dict
    >>> calc = PME(charges={"Na": 1.0, "Cl": -1.0}, accuracy=1e-6)
    >>> again = calculator_from_dict(json.loads(json.dumps(calc.todict())))
    >>> type(again).__name__, again.parameters["accuracy"]
    ('PME', 1e-06)
    """
    name = d.get("class") if isinstance(d, dict) else None
    if not isinstance(name, str) or name not in _CLASSES:
        got = name if isinstance(d, dict) else type(d).__name__
        raise InvalidParameterError(
            f"calculator_from_dict: 'class' must be one of {sorted(_CLASSES)}; got {got!r}."
        )
    cls = _CLASSES[name]
    allowed = _parameter_names(cls)
    unknown = [k for k in d if k != "class" and k not in allowed]
    if unknown:
        raise InvalidParameterError(
            _unknown_keys_message(
                f"calculator_from_dict ({name})", unknown, ["class", *allowed], "key"
            )
        )
    params = {k: v for k, v in d.items() if k != "class"}
    if isinstance(params.get("mesh"), list):
        params["mesh"] = tuple(params["mesh"])
    return cls(**params)
