"""gapkit: Gaussian approximation potentials with SOAP, a sparse GP and ASE.

Public API
----------
SOAP           descriptor settings (DScribe underneath)
GAPRegressor   scikit-learn estimator: fit / predict / predict_forces / evaluate
GAPCalculator  ASE calculator around a fitted model
load           read a model file written by ``GAPRegressor.save``
"""

from .calculator import GAPCalculator
from .descriptors import SOAP
from .estimator import GAPRegressor
from .io import load

__all__ = ["SOAP", "GAPRegressor", "GAPCalculator", "load", "__version__"]

__version__ = "0.1.0"
