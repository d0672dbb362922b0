"""Sphinx configuration of the gapkit documentation."""

project = "gapkit"
author = "gapkit developers"
copyright = "2026, gapkit developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()
autodoc_default_options: dict[str, object] = {}
autodoc_typehints = "none"
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
