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

from ._arrays import array_namespace, device_of, host, to_device
from ._lattice import reduce_cell

__all__ = ["reciprocal_vectors", "ewald_reciprocal"]

#: Largest number of (atom, wave vector) phases held at once.
_CHUNK_ELEMENTS = 4_000_000

#: Voigt order of the strain components (xx, yy, zz, yz, xz, xy).
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def reciprocal_vectors(cell, kcutoff):
    """Half of the wave vectors with ``0 < |m| ≤ kcutoff``.

    Parameters
    ----------
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows in Å. Any basis of the lattice: the integer box
        ``|n_a| ≤ m_c |a_a|`` is laid out along a Minkowski-reduced basis
        (:func:`gapkit.electrostatics.reduce_cell`), so a skewed basis does not
        inflate it; the set of wave vectors does not depend on the basis.
    kcutoff : float
        Cut-off m_c on ``|m|`` in Å⁻¹ (reciprocal lattice without 2π).

    Returns
    -------
    ndarray of shape (n_vectors, 3)
        Cartesian wave vectors m in Å⁻¹, one of each ±m pair.
    """
    cell = reduce_cell(np.asarray(cell, dtype=float))[0]
    recip = np.linalg.inv(cell).T
    nmax = np.floor(kcutoff * np.linalg.norm(cell, axis=1)).astype(int)
    ranges = [np.arange(-k, k + 1) for k in nmax]
    n = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (
        (n[:, 0] > 0)
        | ((n[:, 0] == 0) & (n[:, 1] > 0))
        | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
    )
    m = n[half] @ recip
    keep = np.einsum("ij,ij->i", m, m) <= kcutoff**2
    return m[keep]


def ewald_reciprocal(positions, cell, charges, alpha, kcutoff):
    """Reciprocal-space Ewald energies, forces and strain derivative, summed directly.

    Written against the array API: ``positions`` and ``charges`` may be NumPy,
    CuPy or ``array_api_strict`` arrays (the same namespace for both), and the
    results are arrays of that namespace on the same device. The wave vectors
    and their weights are computed on the host with NumPy.

    Parameters
    ----------
    positions : array of shape (n_atoms, 3)
        Cartesian positions in Å.
    cell : array of shape (3, 3)
        Lattice vectors as rows in Å (any namespace; read on the host).
    charges : array of shape (n_atoms,)
        Charges in e.
    alpha : float
        Ewald splitting parameter in Å⁻¹.
    kcutoff : float
        Cut-off m_c on ``|m|`` in Å⁻¹ (no 2π).

    Returns
    -------
    energies : array of shape (n_atoms,)
        ``½ q_i φ_i`` in e²/Å.
    forces : array of shape (n_atoms, 3)
        In e²/Å².
    virial : array of shape (6,)
        ``∂E_rec/∂ε`` in e²/Å, Voigt order.
    """
    xp = array_namespace(positions, charges)
    positions = xp.asarray(positions, dtype=xp.float64)
    charges = xp.asarray(charges, dtype=xp.float64)
    cell = host(cell)
    dev = device_of(charges)
    volume = abs(np.linalg.det(cell))
    mvec_h = reciprocal_vectors(cell, kcutoff)
    n = charges.shape[0]
    pot = xp.zeros(n, dtype=xp.float64, device=dev)
    forces = xp.zeros((n, 3), dtype=xp.float64, device=dev)
    if len(mvec_h) == 0 or n == 0:
        return pot, forces, xp.zeros(6, dtype=xp.float64, device=dev)
    msq_h = np.einsum("ij,ij->i", mvec_h, mvec_h)
    pi2a2 = math.pi**2 / alpha**2
    coef_h = np.exp(-pi2a2 * msq_h) / (math.pi * volume * msq_h)
    # strain weight of each wave vector without E(m): 2 (1 + π²m²/α²) / m²
    svir_h = 2.0 * (1.0 + pi2a2 * msq_h) / msq_h
    mvec, coef, svir = (to_device(xp, a, charges) for a in (mvec_h, coef_h, svir_h))
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    energy = 0.0
    vir = [0.0] * 6
    for lo in range(0, len(mvec_h), chunk):
        hi = min(len(mvec_h), lo + chunk)
        m = mvec[lo:hi, :]
        c = coef[lo:hi]
        phase = (2.0 * math.pi) * (positions @ m.T)
        cos, sin = xp.cos(phase), xp.sin(phase)
        s_re = charges @ cos
        s_im = charges @ sin
        e_m = c * (s_re**2 + s_im**2)
        energy = energy + xp.sum(e_m)
        pot = pot + 2.0 * (cos @ (c * s_re) + sin @ (c * s_im))
        forces = forces + (4.0 * math.pi) * (
            (sin @ (c[:, None] * s_re[:, None] * m)) - (cos @ (c[:, None] * s_im[:, None] * m))
        )
        s = e_m * svir[lo:hi]
        for k, (a, b) in enumerate(_VOIGT):
            vir[k] = vir[k] + s @ (m[:, a] * m[:, b])
    virial = xp.stack([vir[0] - energy, vir[1] - energy, vir[2] - energy, vir[3], vir[4], vir[5]])
    forces = forces * charges[:, None]
    return 0.5 * charges * pot, forces, virial
