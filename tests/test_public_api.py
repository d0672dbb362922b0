"""Every public name imports and is documented; ``__all__`` matches what packages export."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import gapkit

MODULES = [
    "gapkit",
    "gapkit.descriptors",
    "gapkit.kernels",
    "gapkit.sparsify",
    "gapkit.gp",
    "gapkit.design",
    "gapkit.estimator",
    "gapkit.calculator",
    "gapkit.io",
    "gapkit.metrics",
    "gapkit.datasets",
    "gapkit.exceptions",
    "gapkit.units",
    "gapkit.uncertainty",
    "gapkit.plots",
    "gapkit.active",
    "gapkit.active.runner",
    "gapkit.neighbours",
    "gapkit.electrostatics",
    "gapkit.distributed",
]

#: gapkit and every subpackage (found on disk, so a new one is checked too).
PACKAGES = ["gapkit"] + sorted(
    m.name for m in pkgutil.walk_packages(gapkit.__path__, "gapkit.") if m.ispkg
)


def _own_docstring(obj) -> str | None:
    """The docstring written for ``obj``, not one generated for it (dataclasses and
    named tuples get ``Name(field, ...)``) nor, for a class, inherited."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if doc and inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return None
    return doc


@pytest.mark.parametrize("module", MODULES)
def test_all_names_exist_and_have_docstrings(module):
    mod = importlib.import_module(module)
    assert mod.__doc__
    for name in mod.__all__:
        obj = getattr(mod, name)
        if callable(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"


def test_subpackages_are_found():
    assert {"gapkit", "gapkit.active", "gapkit.electrostatics"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_all_star_imports_and_is_documented(package):
    mod = importlib.import_module(package)
    assert mod.__doc__, f"{package} has no module docstring"
    assert hasattr(mod, "__all__"), f"{package} has no __all__"
    assert len(set(mod.__all__)) == len(mod.__all__), f"{package}.__all__ repeats a name"
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # fails on a name __all__ lists but lacks
    for name in mod.__all__:
        assert name in namespace
        if name.startswith("__"):
            continue
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            assert _own_docstring(obj), f"{package}.{name} has no docstring"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_exports_are_all_in_all(package):
    """Every public class or function a package's ``__init__`` binds is in ``__all__``."""
    mod = importlib.import_module(package)
    public = {
        name
        for name, obj in vars(mod).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isroutine(obj))
    }
    missing = sorted(public - set(mod.__all__))
    assert not missing, f"{package} exports {missing} but leaves them out of __all__"


def test_top_level_api():
    assert {"SOAP", "GAPRegressor", "GAPCalculator", "load"} <= set(gapkit.__all__)


def test_version_matches_the_installed_metadata():
    assert gapkit.__version__ == importlib.metadata.version("gapkit")


def test_version_is_read_from_the_installed_metadata():
    """A hard-coded ``__version__`` equals the metadata only until the next release:
    the installed version is replaced by a sentinel before gapkit is imported."""
    script = textwrap.dedent("""
        import importlib.metadata

        real = importlib.metadata.version
        importlib.metadata.version = lambda name: "9.9.9" if name == "gapkit" else real(name)
        import gapkit

        print(gapkit.__version__)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "9.9.9"
