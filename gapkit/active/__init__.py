"""Active learning: choose what to label, label it, learn on the fly."""

from .incremental import IncrementalGAP, most_uncertain_environments
from .otf import OnTheFlyLearner, OnTheFlyResult
from .selection import label_structures, select_batch

__all__ = [
    "select_batch",
    "label_structures",
    "IncrementalGAP",
    "most_uncertain_environments",
    "OnTheFlyLearner",
    "OnTheFlyResult",
]
