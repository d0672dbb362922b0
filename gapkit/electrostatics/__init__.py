"""Long-range electrostatics of fixed point charges: Ewald, smooth PME and Coulomb.

Public API
----------
Ewald                 ASE calculator, direct Ewald sum (reference; any periodic cell)
PME                   ASE calculator, smooth particle-mesh Ewald (O(N log N))
Coulomb               ASE calculator, plain pair sum for non-periodic systems
calculator_from_dict  rebuild a calculator from its ``todict()``
tune_ewald, tune_pme  parameters (α, cut-offs, mesh) from one ``accuracy`` number
EwaldParameters, PMEParameters  what the tuners return
reduce_cell           Minkowski-reduced basis of a skewed cell (what the methods use)

The layout follows the split *what* / *how* / *which parameters*:
:mod:`.potentials` (the Ewald terms), :mod:`.realspace`, :mod:`.ewald` and
:mod:`.pme` (the methods), :mod:`.splines` (B-splines) and :mod:`.tuning`;
:mod:`._lattice` reduces skewed cells before any of them lays out a mesh, a
wave-vector box or an image stencil.
"""

from ._lattice import reduce_cell
from .calculators import PME, Coulomb, Ewald, calculator_from_dict
from .tuning import EwaldParameters, PMEParameters, tune_ewald, tune_pme

__all__ = [
    "Ewald",
    "PME",
    "Coulomb",
    "calculator_from_dict",
    "tune_ewald",
    "tune_pme",
    "EwaldParameters",
    "PMEParameters",
    "reduce_cell",
]
