"""Every public name imports and is documented."""

from __future__ import annotations

import importlib

import pytest

import gapkit

MODULES = ["gapkit", "gapkit.descriptors", "gapkit.kernels", "gapkit.sparsify", "gapkit.gp",
           "gapkit.design", "gapkit.estimator", "gapkit.calculator", "gapkit.io",
           "gapkit.metrics", "gapkit.datasets", "gapkit.exceptions", "gapkit.units",
           "gapkit.uncertainty", "gapkit.plots", "gapkit.active", "gapkit.active.runner",
           "gapkit.neighbours", "gapkit.electrostatics", "gapkit.distributed"]


@pytest.mark.parametrize("module", MODULES)
def test_all_names_exist_and_have_docstrings(module):
    mod = importlib.import_module(module)
    assert mod.__doc__
    for name in mod.__all__:
        obj = getattr(mod, name)
        if callable(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"


def test_top_level_api():
    assert {"SOAP", "GAPRegressor", "GAPCalculator", "load"} <= set(gapkit.__all__)
