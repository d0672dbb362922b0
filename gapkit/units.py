"""Physical constants and conventions used throughout gapkit.

Units are eV, Å, eV/Å and eV/Å³. Stresses use ASE's sign and Voigt order
(xx, yy, zz, yz, xz, xy).
"""

from __future__ import annotations

__all__ = ["COULOMB_CONSTANT", "VOIGT_PAIRS"]

#: Coulomb constant k_e = e² / (4 π ε₀) in eV·Å.
COULOMB_CONSTANT: float = 14.399645478

#: Cartesian index pairs of the six Voigt components, in ASE's order.
VOIGT_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
