"""Active learning: choose what to label, label it, learn on the fly."""

from .incremental import IncrementalGAP
from .otf import OnTheFlyLearner, OnTheFlyResult
from .selection import label_structures, select_batch

__all__ = ["select_batch", "label_structures", "IncrementalGAP", "OnTheFlyLearner",
           "OnTheFlyResult"]
