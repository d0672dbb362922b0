"""Direct reciprocal-space Ewald sum over explicit wave vectors (the reference method).

Notes
-----
With reciprocal vectors a*_a (no 2π) every wave vector is
``m = n₁a*₁ + n₂a*₂ + n₃a*₃`` with integers n, and the sum keeps ``0 < |m| ≤ m_c``.
Only one of ±m is stored (``n₁ > 0``, or ``n₁ = 0, n₂ > 0``, or
``n₁ = n₂ = 0, n₃ > 0``) and counted twice. With ``C(m) = exp(-π²m²/α²)/(πVm²)``
and the structure factor ``S(m) = Σ_j q_j exp(2πi m·r_j)``:

.. math::

    E_{rec} = \\sum_{\\text{half}} C(m) |S(m)|^2, \\qquad
    \\phi_i = 2\\sum_{\\text{half}} C(m)\\,\\mathrm{Re}\\bigl[S(m) e^{-2\\pi i m\\cdot r_i}\\bigr],

    F_i = 4\\pi q_i \\sum_{\\text{half}} C(m)\\,\\mathbf m\\,
          \\mathrm{Im}\\bigl[S(m)^* e^{2\\pi i m\\cdot r_i}\\bigr],

and the per-atom energy is ``½ q_i φ_i``. The strain derivative is the same as
for SPME (:mod:`gapkit.electrostatics.pme`) with the exact ``|S|²``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["reciprocal_vectors", "ewald_reciprocal"]

#: Largest number of (atom, wave vector) phases held at once.
_CHUNK_ELEMENTS = 4_000_000


def reciprocal_vectors(cell, kcutoff):
    """Half of the wave vectors with ``0 < |m| ≤ kcutoff``.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å.
    kcutoff : float
        Cut-off m_c on ``|m|`` in Å⁻¹ (reciprocal lattice without 2π).

    Returns
    -------
    ndarray of shape (n_vectors, 3)
        Cartesian wave vectors m in Å⁻¹, one of each ±m pair.
    """
    cell = np.asarray(cell, dtype=float)
    recip = np.linalg.inv(cell).T
    nmax = np.floor(kcutoff * np.linalg.norm(cell, axis=1)).astype(int)
    ranges = [np.arange(-k, k + 1) for k in nmax]
    n = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0)) | (
        (n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
    m = n[half] @ recip
    keep = np.einsum("ij,ij->i", m, m) <= kcutoff**2
    return m[keep]


def ewald_reciprocal(positions, cell, charges, alpha, kcutoff):
    """Reciprocal-space Ewald energies, forces and strain derivative, summed directly.

    Parameters
    ----------
    positions : ndarray of shape (n_atoms, 3)
        Cartesian positions in Å.
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å.
    charges : ndarray of shape (n_atoms,)
        Charges in e.
    alpha : float
        Ewald splitting parameter in Å⁻¹.
    kcutoff : float
        Cut-off m_c on ``|m|`` in Å⁻¹ (no 2π).

    Returns
    -------
    energies : ndarray of shape (n_atoms,)
        ``½ q_i φ_i`` in e²/Å.
    forces : ndarray of shape (n_atoms, 3)
        In e²/Å².
    virial : ndarray of shape (6,)
        ``∂E_rec/∂ε`` in e²/Å, Voigt order.
    """
    positions = np.asarray(positions, dtype=float)
    charges = np.asarray(charges, dtype=float)
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    mvec = reciprocal_vectors(cell, kcutoff)
    n = len(charges)
    pot = np.zeros(n)
    forces = np.zeros((n, 3))
    virial = np.zeros(6)
    if len(mvec) == 0 or n == 0:
        return pot, forces, virial
    msq = np.einsum("ij,ij->i", mvec, mvec)
    pi2a2 = math.pi**2 / alpha**2
    coef = np.exp(-pi2a2 * msq) / (math.pi * volume * msq)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    energy = 0.0
    for lo in range(0, len(mvec), chunk):
        m = mvec[lo: lo + chunk]
        c = coef[lo: lo + chunk]
        phase = (2.0 * math.pi) * (positions @ m.T)
        cos, sin = np.cos(phase), np.sin(phase)
        s_re = charges @ cos
        s_im = charges @ sin
        e_m = c * (s_re**2 + s_im**2)
        energy += e_m.sum()
        pot += 2.0 * (cos @ (c * s_re) + sin @ (c * s_im))
        forces += (4.0 * math.pi) * (
            (sin @ (c[:, None] * s_re[:, None] * m)) - (cos @ (c[:, None] * s_im[:, None] * m)))
        s = 2.0 * e_m * (1.0 + pi2a2 * msq[lo: lo + chunk]) / msq[lo: lo + chunk]
        virial[0] += s @ (m[:, 0] * m[:, 0])
        virial[1] += s @ (m[:, 1] * m[:, 1])
        virial[2] += s @ (m[:, 2] * m[:, 2])
        virial[3] += s @ (m[:, 1] * m[:, 2])
        virial[4] += s @ (m[:, 0] * m[:, 2])
        virial[5] += s @ (m[:, 0] * m[:, 1])
    virial[:3] -= energy
    forces *= charges[:, None]
    return 0.5 * charges * pot, forces, virial
