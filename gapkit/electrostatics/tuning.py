"""Choosing Ewald and PME parameters from one accuracy number: *which parameters*.

``accuracy`` is the target RMS force error relative to the force between two
unit charges 1 Å apart (the LAMMPS convention): with k_e = 14.3996 eV·Å,
``accuracy=1e-5`` asks for an RMS error of the force vectors
``sqrt(<|ΔF_i|²>) ≤ 1.44e-4 eV/Å``. In the Gaussian units used below (charges
in e, lengths in Å) the target is simply ``δ = accuracy`` e²/Å². The target is absolute:
every error estimate below scales as Σq², so charges much smaller than 1 e meet
it with almost any parameters and their results can be poor *relative* to
their own size; ask for ``accuracy`` times q² for a relative target. All-zero
charges have nothing to tune (the calculators return zeros), and ``accuracy``
below :data:`MIN_ACCURACY` is refused.

Notes
-----
The error budget is split equally, ``δ_r = δ_k = s δ/√2``, with a safety factor
s = 0.8 because the estimates below are averages, not bounds (on small random
systems the measured error scatters by about ±30 % around them), and

* real space (Kolafa & Perram 1992), cut-off r_c:

  .. math:: \\Delta F_r = \\frac{2 \\sum_i q_i^2}{\\sqrt{N r_c V}}\\, e^{-\\alpha^2 r_c^2};

* direct Ewald reciprocal sum with ``|m| ≤ m_c`` (Kolafa & Perram; L = V^{1/3}):

  .. math:: \\Delta F_k = \\frac{2 \\sum_i q_i^2\\, \\alpha}{L\\sqrt{\\pi N m_c L}}\\,
            e^{-\\pi^2 m_c^2/\\alpha^2};

* SPME reciprocal sum of order p with mesh spacing ``h_a = |a_a|/K_a`` along lattice
  vector a (the Deserno–Holm/Petersen form ``Σq² √(α/(NV)) (hα)^e``; the
  prefactor C_p and exponent e_p are fitted to the measured error against the
  direct Ewald sum for random charge sets, p = 4 … 8, and the table keeps the
  upper envelope of the fit residuals):

  .. math:: \\Delta F_k^2 = \\frac13 \\sum_a \\Bigl[C_p \\sum_i q_i^2
            \\sqrt{\\frac{\\alpha}{N V}}\\,(h_a\\alpha)^{e_p}\\Bigr]^2 ;

  the fit covers h α ≤ 0.45, and the tuner never chooses a coarser mesh.

Both tuners first replace the cell by its Minkowski-reduced basis
(:func:`gapkit.electrostatics.reduce_cell`; the cell itself unless it is
skewed): the estimates above, the mesh ``K_a = |a_a|/h_a`` in particular, hold
for near-orthogonal cells, and a skewed basis of the same lattice would
otherwise get a mesh that grows with the skew and misses the target.

Given α (or r_c) the remaining parameters follow from these estimates. When
none is fixed, :func:`tune_pme` scans r_c (and the spline order) and keeps the
choice with the lowest modelled run time (pair work ∝ N ρ r_c³, FFT work ∝ K³ log K, spline work ∝
N p³), and :func:`tune_ewald` uses the classic balance
``α = (π³ c N / V²)^{1/6}`` of the real-space and k-space work.

References
----------
J. Kolafa and J. W. Perram, Mol. Simul. 9, 351 (1992).
M. Deserno and C. Holm, J. Chem. Phys. 109, 7694 (1998).
H. G. Petersen, J. Chem. Phys. 103, 3668 (1995).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

from ..exceptions import InvalidParameterError, InvalidStructureError
from ._lattice import reduce_cell

__all__ = [
    "EwaldParameters",
    "PMEParameters",
    "real_space_error",
    "ewald_kspace_error",
    "pme_kspace_error",
    "tune_ewald",
    "tune_pme",
    "MIN_ACCURACY",
]

#: Fraction of the requested accuracy that the estimates aim at.
SAFETY = 0.8

#: Largest mesh spacing (times α) the SPME error model is trusted for.
_MAX_H_ALPHA = 0.45

#: SPME error model (C_p, e_p) per spline order, see the module notes.
PME_ERROR_TABLE: dict[int, tuple[float, float]] = {
    4: (0.120, 3.205),
    5: (0.086, 4.544),
    6: (0.088, 5.800),
    7: (0.154, 7.502),
    8: (0.252, 9.058),
}

#: Smallest ``accuracy`` accepted: below it the round-off of the sums in double
#: precision (about 1e-14 of the energy) dominates, and the mesh and wave-vector
#: counts grow without bringing the result closer.
MIN_ACCURACY = 1e-15

#: Most mesh points the tuner chooses (2**28 doubles are 2 GiB per mesh copy).
_MAX_MESH_POINTS = 2**28

#: Most periodic image cells the real-space stencil may span, ``Π (2⌈r_c/d_a⌉ + 1)``.
_MAX_IMAGE_CELLS = 4_000_000

#: Most integer wave vectors in the box of the direct Ewald sum, ``Π (2⌊m_c|a_a|⌋ + 1)``.
_MAX_WAVE_VECTORS = 20_000_000

# Cost of the parts of one PME evaluation, measured on a 2-core machine (seconds
# per unit of work): one pair inside the cut-off (each pair once), one mesh point
# of FFT work per log2 of the mesh size, one spline weight (p³ per atom), and a
# fixed cost per atom (wrapping, sorting, buffers).
_COST_PAIR = 20e-9
_COST_FFT = 2.5e-9
_COST_SPLINE = 3.5e-9
_COST_ATOM = 1.0e-6


@dataclass(frozen=True)
class EwaldParameters:
    """Parameters of a direct Ewald sum.

    Attributes
    ----------
    alpha : float
        Splitting parameter in Å⁻¹.
    cutoff : float
        Real-space cut-off in Å.
    kcutoff : float
        Cut-off on ``|m|`` in Å⁻¹ (reciprocal lattice without 2π).
    estimated_error : float
        Estimated RMS force error in e²/Å² (multiply by k_e for eV/Å).
    """

    alpha: float
    cutoff: float
    kcutoff: float
    estimated_error: float

    def todict(self):
        """The parameters as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class PMEParameters:
    """Parameters of a smooth particle-mesh Ewald sum.

    Attributes
    ----------
    alpha : float
        Splitting parameter in Å⁻¹.
    cutoff : float
        Real-space cut-off in Å.
    mesh : tuple of 3 int
        Mesh points along the three lattice vectors.
    order : int
        B-spline order.
    estimated_error : float
        Estimated RMS force error in e²/Å² (multiply by k_e for eV/Å).
    """

    alpha: float
    cutoff: float
    mesh: tuple[int, int, int]
    order: int
    estimated_error: float

    def todict(self):
        """The parameters as a plain dict."""
        return asdict(self)


def real_space_error(cutoff, alpha, sum_q2, n_atoms, volume):
    """Kolafa–Perram estimate of the real-space RMS force error.

    Parameters
    ----------
    cutoff : float
        Real-space cut-off r_c in Å.
    alpha : float
        Splitting parameter in Å⁻¹.
    sum_q2 : float
        Σ q_i² in e².
    n_atoms : int
        Number of atoms N.
    volume : float
        Cell volume V in Å³.

    Returns
    -------
    float
        ``2 Σq² / sqrt(N r_c V) · exp(-α² r_c²)`` in e²/Å².
    """
    return 2.0 * sum_q2 / math.sqrt(n_atoms * cutoff * volume) * math.exp(-((alpha * cutoff) ** 2))


def ewald_kspace_error(kcutoff, alpha, sum_q2, n_atoms, volume):
    """Kolafa–Perram estimate of the reciprocal-space RMS force error of the Ewald sum.

    Parameters
    ----------
    kcutoff : float
        Cut-off m_c on ``|m|`` in Å⁻¹ (no 2π).
    alpha : float
        Splitting parameter in Å⁻¹.
    sum_q2 : float
        Σ q_i² in e².
    n_atoms : int
        Number of atoms N.
    volume : float
        Cell volume V in Å³.

    Returns
    -------
    float
        ``2 Σq² α / (L sqrt(π N m_c L)) · exp(-π² m_c²/α²)`` with L = V^{1/3}, in e²/Å².
    """
    length = volume ** (1.0 / 3.0)
    km = max(kcutoff * length, 1e-12)
    return (
        2.0
        * sum_q2
        * alpha
        / length
        / math.sqrt(math.pi * km * n_atoms)
        * math.exp(-((math.pi * kcutoff / alpha) ** 2))
    )


def pme_kspace_error(mesh, cell, alpha, order, sum_q2, n_atoms):
    """Estimated reciprocal-space RMS force error of SPME.

    Parameters
    ----------
    mesh : sequence of 3 int
        Mesh points K_a along each lattice vector.
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å.
    alpha : float
        Splitting parameter in Å⁻¹.
    order : int
        B-spline order p (4–8).
    sum_q2 : float
        Σ q_i² in e².
    n_atoms : int
        Number of atoms N.

    Returns
    -------
    float
        ``sqrt(⅓ Σ_a [C_p Σq² sqrt(α/(NV)) (h_a α)^{e_p}]²)`` in e²/Å², with
        ``h_a = |a_a| / K_a`` and (C_p, e_p) from :data:`PME_ERROR_TABLE`.
    """
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    coef, expo = PME_ERROR_TABLE[int(order)]
    h = np.linalg.norm(cell, axis=1) / np.asarray(mesh, dtype=float)
    per_dir = coef * sum_q2 * math.sqrt(alpha / (n_atoms * volume)) * (h * alpha) ** expo
    return float(math.sqrt(np.mean(per_dir**2)))


def _alpha_for_cutoff(cutoff, target, sum_q2, n_atoms, volume):
    """α such that the real-space error at r_c equals ``target``."""
    pref = 2.0 * sum_q2 / math.sqrt(n_atoms * cutoff * volume)
    if pref <= target:
        return 1e-3 / cutoff  # the bare prefactor already meets the target
    return math.sqrt(math.log(pref / target)) / cutoff


def _cutoff_for_alpha(alpha, target, sum_q2, n_atoms, volume):
    """Smallest r_c ≥ 1/α with real-space error ≤ ``target`` (fixed-point iteration).

    The floor α r_c ≥ 1 only matters when the bare prefactor already meets the
    target (tiny charges): the cut-off then stays a sensible length instead of
    shrinking towards zero.
    """
    cutoff = 3.0 / alpha
    for _ in range(50):
        pref = 2.0 * sum_q2 / math.sqrt(n_atoms * cutoff * volume)
        new = math.sqrt(max(math.log(max(pref / target, 1.0)), 1.0)) / alpha
        if abs(new - cutoff) < 1e-10 * cutoff:
            break
        cutoff = new
    return cutoff


def _kcutoff_for_alpha(alpha, target, sum_q2, n_atoms, volume):
    """Smallest m_c with Ewald reciprocal error ≤ ``target`` (bisection)."""
    lo, hi = 1e-6, alpha
    while ewald_kspace_error(hi, alpha, sum_q2, n_atoms, volume) > target:
        hi *= 1.5
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if ewald_kspace_error(mid, alpha, sum_q2, n_atoms, volume) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _mesh_for_alpha(alpha, target, cell, order, sum_q2, n_atoms):
    """Smallest FFT-friendly mesh (each K ≥ order) with SPME error ≤ ``target``."""
    volume = abs(np.linalg.det(cell))
    coef, expo = PME_ERROR_TABLE[int(order)]
    pref = coef * sum_q2 * math.sqrt(alpha / (n_atoms * volume))
    # each direction gets the full target: the mean of squares then meets it too;
    # the error model is calibrated for h α ≤ 0.45 only
    h = min((target / pref) ** (1.0 / expo), _MAX_H_ALPHA) / alpha
    lengths = np.linalg.norm(cell, axis=1)
    mesh = []
    for length in lengths:
        k = max(int(math.ceil(min(length / h, 1e18))), int(order))
        # a mesh beyond the size limit is refused later; no need to round it up
        mesh.append(int(scipy.fft.next_fast_len(k, real=True)) if k <= _MAX_MESH_POINTS else k)
    return tuple(mesh)


def _is_positive_number(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _check_accuracy(accuracy, owner):
    if not (_is_positive_number(accuracy) and MIN_ACCURACY <= accuracy < 1.0):
        raise InvalidParameterError(
            f"{owner}: 'accuracy' must be a number in (0, 1), the RMS force error relative "
            f"to two unit charges 1 Å apart, and at least {MIN_ACCURACY:g} (what double "
            f"precision resolves); got {accuracy!r}."
        )


def _check_inputs(owner, cell, charges, fixed):
    """Validate the tuner's arguments; return the cell and charges as float arrays."""
    for name, value in fixed.items():
        if value is not None and not _is_positive_number(value):
            raise InvalidParameterError(
                f"{owner}: '{name}' must be None (chosen from 'accuracy') or a positive "
                f"finite number; got {value!r}."
            )
    try:
        cell = np.asarray(cell, dtype=float)
        charges = np.asarray(charges, dtype=float)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"{owner}: 'cell' must be a (3, 3) array of lattice vectors in Å and 'charges' "
            f"a 1-D array of charges in e; {err}"
        ) from err
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise InvalidStructureError(
            f"{owner}: 'cell' must be a (3, 3) array of finite lattice vectors (rows, Å); "
            f"got shape {cell.shape}"
            + ("" if cell.shape != (3, 3) else " with NaN or infinite values")
            + "."
        )
    volume = abs(float(np.linalg.det(cell)))
    if volume <= 1e-10 * float(np.prod(np.linalg.norm(cell, axis=1))) or volume == 0.0:
        raise InvalidStructureError(
            f"{owner}: the cell has zero volume ({volume:.3g} Å³); an Ewald sum needs three "
            "linearly independent lattice vectors."
        )
    if charges.ndim != 1 or not np.all(np.isfinite(charges)):
        raise InvalidParameterError(
            f"{owner}: 'charges' must be a 1-D array of finite charges in e; got shape "
            f"{charges.shape}" + ("" if charges.ndim != 1 else " with NaN or infinite values") + "."
        )
    if not float(np.dot(charges, charges)) > 0.0:
        raise InvalidParameterError(
            f"{owner}: the charges are all zero (or so small that Σq² underflows); the "
            "Coulomb energy is 0 and there is nothing to tune. The calculators return "
            "zeros for such systems without tuning."
        )
    return cell, charges


def _system_sizes(cell, charges):
    n_atoms = max(len(charges), 1)
    sum_q2 = max(float(np.sum(charges**2)), 1e-300)
    volume = abs(float(np.linalg.det(cell)))
    return n_atoms, sum_q2, volume


def _check_real_space_images(owner, cell, cutoff):
    """Refuse a cut-off whose image stencil would not fit in memory."""
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)  # plane spacings d_a
    cells = float(np.prod(2.0 * np.ceil(np.minimum(cutoff / spacing, 1e100)) + 1.0))
    if cells > _MAX_IMAGE_CELLS:
        raise InvalidParameterError(
            f"{owner}: the real-space cut-off {cutoff:.4g} Å reaches {cells:.3g} periodic "
            f"images of this cell (lattice plane spacings "
            f"{', '.join(f'{d:.3g}' for d in spacing)} Å), more than {_MAX_IMAGE_CELLS:.0e}; "
            "give a smaller 'cutoff' or a larger 'alpha' (or leave both to the tuner)."
        )


def _check_wave_vectors(owner, cell, kcutoff):
    """Refuse a k-space cut-off whose box of integer wave vectors would not fit in memory."""
    box = float(
        np.prod(2.0 * np.floor(np.minimum(kcutoff * np.linalg.norm(cell, axis=1), 1e100)) + 1.0)
    )
    if box > _MAX_WAVE_VECTORS:
        raise InvalidParameterError(
            f"{owner}: the wave-vector cut-off {kcutoff:.4g} Å⁻¹ spans {box:.3g} integer wave "
            f"vectors of this cell, more than {_MAX_WAVE_VECTORS:.0e}; give a smaller "
            "'kcutoff' or a smaller 'alpha', or use PME for large cells."
        )


def _check_mesh_size(owner, mesh, alpha, accuracy):
    points = float(np.prod(np.asarray(mesh, dtype=float)))
    if points > _MAX_MESH_POINTS:
        raise InvalidParameterError(
            f"{owner}: accuracy={accuracy:g} with alpha={alpha:.4g} Å⁻¹ needs a mesh of "
            f"{' × '.join(str(k) for k in mesh)} = {points:.3g} points, more than "
            f"{_MAX_MESH_POINTS:.3g}; ask for a coarser 'accuracy', a smaller 'alpha' (or a "
            "larger 'cutoff'), or set 'mesh' yourself."
        )


def tune_ewald(cell, charges, accuracy=1e-5, *, alpha=None, cutoff=None, kcutoff=None):
    """Choose α, the real-space cut-off and the k-space cut-off of a direct Ewald sum.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å (any basis of the lattice).
    charges : ndarray of shape (n_atoms,)
        Charges in e, not all zero.
    accuracy : float, default=1e-5
        Target RMS force error relative to two unit charges 1 Å apart, in
        [1e-15, 1) (:data:`MIN_ACCURACY`).
    alpha, cutoff, kcutoff : float, default=None
        Values to keep fixed; the others are chosen to meet ``accuracy``.

    Returns
    -------
    EwaldParameters

    Raises
    ------
    InvalidParameterError
        A bad ``accuracy`` or fixed value, all-zero charges, or parameters whose
        real-space images or wave vectors would not fit in memory (the message
        says which to change).
    InvalidStructureError
        A cell with NaN or infinite values or zero volume.

    Notes
    -----
    Without fixed values, ``α = (π³ N / V²)^{1/6}`` balances the real-space and
    reciprocal work (Perram et al.), then r_c and m_c come from the error
    estimates at δ/√2 each. The parameters depend on the lattice only through
    N and V; the memory checks use the Minkowski-reduced cell, as the sums do.
    """
    _check_accuracy(accuracy, "tune_ewald")
    return _tune_ewald(
        "tune_ewald", cell, charges, accuracy, alpha=alpha, cutoff=cutoff, kcutoff=kcutoff
    )


def _tune_ewald(owner, cell, charges, accuracy, *, alpha, cutoff, kcutoff):
    """:func:`tune_ewald` with error messages in the name of ``owner``."""
    _check_accuracy(accuracy, owner)
    cell, charges = _check_inputs(
        owner, cell, charges, {"alpha": alpha, "cutoff": cutoff, "kcutoff": kcutoff}
    )
    cell = reduce_cell(cell)[0]
    n_atoms, sum_q2, volume = _system_sizes(cell, charges)
    target = SAFETY * float(accuracy) / math.sqrt(2.0)
    if alpha is None:
        if cutoff is not None:
            alpha = _alpha_for_cutoff(cutoff, target, sum_q2, n_atoms, volume)
        elif kcutoff is not None:
            lo, hi = 1e-4, 100.0
            for _ in range(200):
                mid = math.sqrt(lo * hi)
                if ewald_kspace_error(kcutoff, mid, sum_q2, n_atoms, volume) > target:
                    hi = mid
                else:
                    lo = mid
            alpha = lo
        else:
            alpha = (3.0 * math.pi**3 * n_atoms / volume**2) ** (1.0 / 6.0)
    alpha = float(alpha)
    if cutoff is None:
        cutoff = _cutoff_for_alpha(alpha, target, sum_q2, n_atoms, volume)
    if kcutoff is None:
        kcutoff = _kcutoff_for_alpha(alpha, target, sum_q2, n_atoms, volume)
    _check_real_space_images(owner, cell, float(cutoff))
    _check_wave_vectors(owner, cell, float(kcutoff))
    error = math.hypot(
        real_space_error(cutoff, alpha, sum_q2, n_atoms, volume),
        ewald_kspace_error(kcutoff, alpha, sum_q2, n_atoms, volume),
    )
    return EwaldParameters(
        alpha=alpha, cutoff=float(cutoff), kcutoff=float(kcutoff), estimated_error=error
    )


def _pme_cost(cutoff, mesh, order, n_atoms, volume):
    """Modelled run time (s) of one PME evaluation."""
    density = n_atoms / volume
    pairs = n_atoms * density * (2.0 * math.pi / 3.0) * cutoff**3
    points = float(np.prod(mesh))
    return (
        _COST_PAIR * pairs
        + _COST_FFT * points * math.log2(max(points, 2.0))
        + _COST_SPLINE * n_atoms * order**3
        + _COST_ATOM * n_atoms
    )


def tune_pme(cell, charges, accuracy=1e-5, *, order=None, alpha=None, cutoff=None, mesh=None):
    """Choose α, the real-space cut-off, the mesh and the spline order of a smooth PME sum.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å (any basis of the lattice; see Notes).
    charges : ndarray of shape (n_atoms,)
        Charges in e, not all zero.
    accuracy : float, default=1e-5
        Target RMS force error relative to two unit charges 1 Å apart, in
        [1e-15, 1) (:data:`MIN_ACCURACY`).
    order : int, default=None
        B-spline order p (4–8); None picks the cheapest order by the cost model.
    alpha, cutoff : float, default=None
        Values to keep fixed.
    mesh : sequence of 3 int, default=None
        Mesh to keep fixed, along the rows of ``reduce_cell(cell)``.

    Returns
    -------
    PMEParameters
        Its ``mesh`` counts points along the rows of
        :func:`gapkit.electrostatics.reduce_cell` ``(cell)[0]``: ``cell`` itself
        unless it is a skewed basis, so pass that reduced cell to
        :func:`gapkit.electrostatics.pme.pme_reciprocal`.

    Raises
    ------
    InvalidParameterError
        A bad ``accuracy``, ``order`` or fixed value, all-zero charges, or
        parameters whose mesh or real-space images would not fit in memory (the
        message says which to change).
    InvalidStructureError
        A cell with NaN or infinite values or zero volume.

    Notes
    -----
    The cell is first Minkowski-reduced (:func:`gapkit.electrostatics.reduce_cell`),
    so every basis of the same lattice gets the same parameters, and the mesh
    stays that of the near-orthogonal cell. With nothing fixed, r_c is scanned
    over [4 Å, 16 Å] (and p over 4–8 when ``order`` is None); for each, α meets
    δ_r in real space, the smallest FFT-friendly mesh meets δ_k in reciprocal
    space, and the combination with the lowest modelled run time is returned.
    With α or r_c fixed the other follows from the real-space estimate; with the
    mesh fixed and neither α nor r_c, α is the largest value whose reciprocal
    error meets the target. Without a fixed α, r_c or mesh, the order defaults
    to the cheapest one; with any of them fixed and ``order=None``, p = 6.
    """
    _check_accuracy(accuracy, "tune_pme")
    return _tune_pme(
        "tune_pme", cell, charges, accuracy, order=order, alpha=alpha, cutoff=cutoff, mesh=mesh
    )


def _tune_pme(owner, cell, charges, accuracy, *, order, alpha, cutoff, mesh):
    """:func:`tune_pme` with error messages in the name of ``owner``."""
    _check_accuracy(accuracy, owner)
    if order is not None and (
        isinstance(order, bool)
        or not isinstance(order, numbers.Integral)
        or int(order) not in PME_ERROR_TABLE
    ):
        raise InvalidParameterError(
            f"{owner}: 'order' must be None or an integer in 4..8; got {order!r}."
        )
    if mesh is not None:
        p = 6 if order is None else int(order)
        if not (
            np.ndim(mesh) == 1
            and len(mesh) == 3
            and all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in mesh)
            and min(int(k) for k in mesh) >= p
        ):
            raise InvalidParameterError(
                f"{owner}: 'mesh' must be None or three integers, each ≥ the spline order "
                f"{p}; got {mesh!r}."
            )
    cell, charges = _check_inputs(owner, cell, charges, {"alpha": alpha, "cutoff": cutoff})
    cell = reduce_cell(cell)[0]
    n_atoms, sum_q2, volume = _system_sizes(cell, charges)
    target = SAFETY * float(accuracy) / math.sqrt(2.0)

    def finish(alpha_, cutoff_, mesh_, order_, mesh_fixed):
        mesh_ = tuple(int(k) for k in mesh_)
        if not mesh_fixed:
            _check_mesh_size(owner, mesh_, alpha_, accuracy)
        _check_real_space_images(owner, cell, float(cutoff_))
        err = math.hypot(
            real_space_error(cutoff_, alpha_, sum_q2, n_atoms, volume),
            pme_kspace_error(mesh_, cell, alpha_, order_, sum_q2, n_atoms),
        )
        return PMEParameters(
            alpha=float(alpha_),
            cutoff=float(cutoff_),
            mesh=mesh_,
            order=int(order_),
            estimated_error=err,
        )

    if alpha is not None or cutoff is not None or mesh is not None:
        order = 6 if order is None else int(order)
        mesh_fixed = mesh is not None
        if alpha is None and cutoff is None:  # mesh fixed
            lo, hi = 1e-4, 100.0
            for _ in range(200):
                mid = math.sqrt(lo * hi)
                if pme_kspace_error(mesh, cell, mid, order, sum_q2, n_atoms) > target:
                    hi = mid
                else:
                    lo = mid
            alpha = lo
        if alpha is None:
            alpha = _alpha_for_cutoff(cutoff, target, sum_q2, n_atoms, volume)
        if cutoff is None:
            cutoff = _cutoff_for_alpha(alpha, target, sum_q2, n_atoms, volume)
        if mesh is None:
            mesh = _mesh_for_alpha(alpha, target, cell, order, sum_q2, n_atoms)
        return finish(alpha, cutoff, mesh, order, mesh_fixed)
    orders = sorted(PME_ERROR_TABLE) if order is None else [int(order)]
    best = None
    for p in orders:
        for rc in np.arange(4.0, 16.01, 0.25):
            a = _alpha_for_cutoff(rc, target, sum_q2, n_atoms, volume)
            m = _mesh_for_alpha(a, target, cell, p, sum_q2, n_atoms)
            cost = _pme_cost(rc, m, p, n_atoms, volume)
            if best is None or cost < best[0]:
                best = (cost, a, float(rc), m, p)
    _, alpha, cutoff, mesh, order = best
    return finish(alpha, cutoff, mesh, order, False)
