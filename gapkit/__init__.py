"""gapkit: Gaussian approximation potentials with SOAP, a sparse GP and ASE.

Public API
----------
SOAP           descriptor settings (SOAP power spectrum, analytic derivatives)
GAPRegressor   scikit-learn estimator: fit / predict / predict_forces / evaluate
GAPCalculator  ASE calculator around a fitted model
FittedGAP      the immutable fitted model a GAPRegressor holds in ``fitted_``
load           read a model file written by ``GAPRegressor.save``
"""

from importlib import metadata as _metadata

from .calculator import GAPCalculator
from .descriptors import SOAP
from .estimator import GAPRegressor, load
from .model import FittedGAP

__all__ = ["SOAP", "GAPRegressor", "GAPCalculator", "FittedGAP", "load", "__version__"]

try:
    __version__ = _metadata.version("gapkit")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
