"""Choosing Ewald and PME parameters from one accuracy number: *which parameters*.

``accuracy`` is the target RMS force error relative to the force between two
unit charges 1 Å apart (the LAMMPS convention): with k_e = 14.3996 eV·Å,
``accuracy=1e-5`` asks for an RMS error of the force vectors
``sqrt(<|ΔF_i|²>) ≤ 1.44e-4 eV/Å``. In the Gaussian units used below (charges
in e, lengths in Å) the target is simply ``δ = accuracy`` e²/Å².

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

from ..exceptions import InvalidParameterError

__all__ = [
    "EwaldParameters",
    "PMEParameters",
    "real_space_error",
    "ewald_kspace_error",
    "pme_kspace_error",
    "tune_ewald",
    "tune_pme",
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
    return (2.0 * sum_q2 * alpha / length / math.sqrt(math.pi * km * n_atoms)
            * math.exp(-((math.pi * kcutoff / alpha) ** 2)))


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
    """Smallest r_c with real-space error ≤ ``target`` (fixed-point iteration)."""
    cutoff = 3.0 / alpha
    for _ in range(50):
        pref = 2.0 * sum_q2 / math.sqrt(n_atoms * cutoff * volume)
        new = math.sqrt(max(math.log(max(pref / target, 1.0 + 1e-12)), 1e-12)) / alpha
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
        k = max(int(math.ceil(length / h)), int(order))
        mesh.append(int(scipy.fft.next_fast_len(k, real=True)))
    return tuple(mesh)


def _check_accuracy(accuracy, owner):
    if not (isinstance(accuracy, (int, float)) and 0.0 < float(accuracy) < 1.0):
        raise InvalidParameterError(
            f"{owner}: 'accuracy' must be a number in (0, 1), the RMS force error relative "
            f"to two unit charges 1 Å apart; got {accuracy!r}."
        )


def _system_sizes(cell, charges):
    cell = np.asarray(cell, dtype=float)
    charges = np.asarray(charges, dtype=float)
    n_atoms = max(len(charges), 1)
    sum_q2 = max(float(np.sum(charges**2)), 1e-300)
    volume = abs(float(np.linalg.det(cell)))
    return cell, n_atoms, sum_q2, volume


def tune_ewald(cell, charges, accuracy=1e-5, *, alpha=None, cutoff=None, kcutoff=None):
    """Choose α, the real-space cut-off and the k-space cut-off of a direct Ewald sum.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å.
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    accuracy : float, default=1e-5
        Target RMS force error relative to two unit charges 1 Å apart.
    alpha, cutoff, kcutoff : float, default=None
        Values to keep fixed; the others are chosen to meet ``accuracy``.

    Returns
    -------
    EwaldParameters

    Notes
    -----
    Without fixed values, ``α = (π³ N / V²)^{1/6}`` balances the real-space and
    reciprocal work (Perram et al.), then r_c and m_c come from the error
    estimates at δ/√2 each.
    """
    _check_accuracy(accuracy, "tune_ewald")
    cell, n_atoms, sum_q2, volume = _system_sizes(cell, charges)
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
    error = math.hypot(real_space_error(cutoff, alpha, sum_q2, n_atoms, volume),
                       ewald_kspace_error(kcutoff, alpha, sum_q2, n_atoms, volume))
    return EwaldParameters(alpha=alpha, cutoff=float(cutoff), kcutoff=float(kcutoff),
                           estimated_error=error)


def _pme_cost(cutoff, mesh, order, n_atoms, volume):
    """Modelled run time (s) of one PME evaluation."""
    density = n_atoms / volume
    pairs = n_atoms * density * (2.0 * math.pi / 3.0) * cutoff**3
    points = float(np.prod(mesh))
    return (_COST_PAIR * pairs + _COST_FFT * points * math.log2(max(points, 2.0))
            + _COST_SPLINE * n_atoms * order**3 + _COST_ATOM * n_atoms)


def tune_pme(cell, charges, accuracy=1e-5, *, order=None, alpha=None, cutoff=None,
             mesh=None):
    """Choose α, the real-space cut-off, the mesh and the spline order of a smooth PME sum.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å.
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    accuracy : float, default=1e-5
        Target RMS force error relative to two unit charges 1 Å apart.
    order : int, default=None
        B-spline order p (4–8); None picks the cheapest order by the cost model.
    alpha, cutoff : float, default=None
        Values to keep fixed.
    mesh : sequence of 3 int, default=None
        Mesh to keep fixed.

    Returns
    -------
    PMEParameters

    Notes
    -----
    With nothing fixed, r_c is scanned over [4 Å, 16 Å] (and p over 4–8 when
    ``order`` is None); for each, α meets δ_r in real space, the smallest
    FFT-friendly mesh meets δ_k in reciprocal space, and the combination with
    the lowest modelled run time is returned. With α or r_c fixed the other
    follows from the real-space estimate; with the mesh fixed and neither α nor
    r_c, α is the largest value whose reciprocal error meets the target.
    Without a fixed α, r_c or mesh, the order defaults to the cheapest one; with
    any of them fixed and ``order=None``, p = 6.
    """
    _check_accuracy(accuracy, "tune_pme")
    if order is not None and (isinstance(order, bool) or not isinstance(order, numbers.Integral)
                              or int(order) not in PME_ERROR_TABLE):
        raise InvalidParameterError(
            f"tune_pme: 'order' must be None or an integer in 4..8; got {order!r}.")
    cell, n_atoms, sum_q2, volume = _system_sizes(cell, charges)
    target = SAFETY * float(accuracy) / math.sqrt(2.0)

    def finish(alpha_, cutoff_, mesh_, order_):
        mesh_ = tuple(int(k) for k in mesh_)
        err = math.hypot(real_space_error(cutoff_, alpha_, sum_q2, n_atoms, volume),
                         pme_kspace_error(mesh_, cell, alpha_, order_, sum_q2, n_atoms))
        return PMEParameters(alpha=float(alpha_), cutoff=float(cutoff_), mesh=mesh_,
                             order=int(order_), estimated_error=err)

    if alpha is not None or cutoff is not None or mesh is not None:
        order = 6 if order is None else int(order)
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
        return finish(alpha, cutoff, mesh, order)
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
    return finish(alpha, cutoff, mesh, order)
