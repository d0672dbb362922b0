"""The Coulomb potential split into Ewald parts: *what* is computed.

Every function here is a pure function of arrays and scalars in Gaussian units
(charges in e, lengths in Å, energies in e²/Å); the calculators multiply by
:data:`gapkit.units.COULOMB_CONSTANT` at the end. The methods (:mod:`.ewald`,
:mod:`.pme`) decide *how* the reciprocal-space sum is evaluated.

Notes
-----
With the splitting parameter α (Å⁻¹), ``1/r = erfc(αr)/r + erf(αr)/r``, and the
energy of charges q_i at positions r_i in a periodic cell of volume V is

.. math::

    E = \\tfrac12 \\sum_{i,j,\\mathbf n}' q_i q_j
        \\frac{\\operatorname{erfc}(\\alpha|\\mathbf r_{ij}+\\mathbf n|)}
             {|\\mathbf r_{ij}+\\mathbf n|}
      + \\frac{1}{2\\pi V}\\sum_{\\mathbf m\\neq 0}
        \\frac{e^{-\\pi^2 m^2/\\alpha^2}}{m^2} |S(\\mathbf m)|^2
      - \\frac{\\alpha}{\\sqrt\\pi}\\sum_i q_i^2
      - \\frac{\\pi Q^2}{2V\\alpha^2},

with :math:`S(\\mathbf m) = \\sum_j q_j e^{2\\pi i\\,\\mathbf m\\cdot\\mathbf r_j}`,
reciprocal vectors **m** without the factor 2π, and Q = Σ q_i. The last term is
the energy of a uniform neutralising background; it vanishes for neutral cells.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc

__all__ = [
    "real_space_kernel",
    "reciprocal_kernel",
    "self_energy",
    "background_energy",
]


def real_space_kernel(r, alpha):
    """Short-range pair potential and its radial derivative.

    Parameters
    ----------
    r : ndarray
        Pair distances in Å (> 0).
    alpha : float
        Ewald splitting parameter in Å⁻¹.

    Returns
    -------
    phi : ndarray
        ``erfc(α r) / r`` in Å⁻¹.
    dphi_dr : ndarray
        ``dφ/dr = -erfc(α r)/r² - 2α/√π · exp(-α² r²)/r`` in Å⁻².

    Notes
    -----
    The pair energy of charges q_i, q_j at distance r is q_i q_j φ(r) (Gaussian
    units). The numba kernel in :mod:`gapkit.electrostatics.realspace` evaluates
    the same expressions; this NumPy version is the testable definition.
    """
    r = np.asarray(r, dtype=float)
    phi = erfc(alpha * r) / r
    dphi = -phi / r - 2.0 * alpha / math.sqrt(math.pi) * np.exp(-((alpha * r) ** 2)) / r
    return phi, dphi


def reciprocal_kernel(m_sq, alpha, volume):
    """Reciprocal-space weight of one wave vector.

    Parameters
    ----------
    m_sq : ndarray
        Squared reciprocal vectors ``|m|²`` in Å⁻² (reciprocal lattice **without**
        the factor 2π; all > 0).
    alpha : float
        Ewald splitting parameter in Å⁻¹.
    volume : float
        Cell volume in Å³.

    Returns
    -------
    ndarray
        ``C(m) = exp(-π² m²/α²) / (π V m²)``, so that the reciprocal energy is
        ``½ Σ_{m≠0} C(m) |S(m)|²`` over the full reciprocal lattice.
    """
    m_sq = np.asarray(m_sq, dtype=float)
    return np.exp(-(math.pi**2) * m_sq / alpha**2) / (math.pi * volume * m_sq)


def self_energy(charges, alpha):
    """Per-atom self-interaction correction.

    Parameters
    ----------
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    alpha : float
        Ewald splitting parameter in Å⁻¹.

    Returns
    -------
    ndarray of shape (n_atoms,)
        ``-α/√π · q_i²`` in e²/Å. It does not depend on positions or cell.
    """
    charges = np.asarray(charges, dtype=float)
    return -alpha / math.sqrt(math.pi) * charges**2


def background_energy(charges, volume, alpha):
    """Per-atom energy of the uniform neutralising background.

    Parameters
    ----------
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    volume : float
        Cell volume in Å³.
    alpha : float
        Ewald splitting parameter in Å⁻¹.

    Returns
    -------
    ndarray of shape (n_atoms,)
        ``-π Q q_i / (2 V α²)`` in e²/Å, with Q = Σ q_i; the sum over atoms is
        the background energy ``-π Q² / (2 V α²)``. Its strain derivative
        gives the stress ``+π Q²/(2 V² α²) δ_ab``.
    """
    charges = np.asarray(charges, dtype=float)
    total = float(charges.sum())
    return -math.pi * total * charges / (2.0 * volume * alpha**2)
