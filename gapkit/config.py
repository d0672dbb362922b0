"""Model configs: reading a JSON or TOML file and building a :class:`GAPRegressor`.

A config is a table of :class:`~gapkit.GAPRegressor` parameters whose
``descriptor`` is a table of :class:`~gapkit.SOAP` parameters and whose
``baseline``, if present, is a table naming an electrostatics calculator
(``{"class": "Ewald", "charges": {...}}``). ``gapkit fit --config`` and the
``model`` table of a ``gapkit learn`` config are read here.

This module sits below the command line and the active-learning runner (both
import it; it imports neither), so a model is built from a config the same
way everywhere. Every problem of a config is reported as an
:class:`~gapkit.exceptions.InvalidParameterError` that names the file or the
key, what is allowed and what was found, before any work starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._files import check_output_path
from .exceptions import InvalidParameterError

__all__ = ["read_config", "build_model", "check_model_output"]

_BASELINE_EXAMPLE = '{"class": "Ewald", "charges": {"Na": 1.0, "Cl": -1.0}}'


def read_config(path) -> dict:
    """Read a config file: TOML for a ``.toml`` suffix, JSON otherwise.

    Parameters
    ----------
    path : str or path-like or None
        The config file; None gives an empty config.

    Returns
    -------
    dict
        The top-level table of the file.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    InvalidParameterError
        The file is not valid JSON or TOML (the message names the file and
        gives the parser's message), is not text, or its top level is not a
        table.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.toml"
    >>> _ = path.write_text('n_sparse = 100\\n[descriptor]\\nr_cut = 4.0\\n')
    >>> read_config(path)
    {'n_sparse': 100, 'descriptor': {'r_cut': 4.0}}
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise InvalidParameterError(f"config {str(path)!r} is a directory, not a file.")
        raise FileNotFoundError(f"no config file at {str(path)!r}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InvalidParameterError(
            f"config {str(path)!r} is not a text file (JSON or TOML): {err}."
        ) from err
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib
            except ModuleNotFoundError as err:
                raise InvalidParameterError(
                    f"config {str(path)!r}: TOML configs on Python 3.10 need the tomli "
                    "package (pip install tomli), or use a .json config."
                ) from err
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise InvalidParameterError(f"config {str(path)!r}: not valid TOML ({err}).") from err
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidParameterError(f"config {str(path)!r}: not valid JSON ({err}).") from err
    if not isinstance(config, dict):
        raise InvalidParameterError(
            f"config {str(path)!r}: expected a table of parameters at the top level; got "
            f"{type(config).__name__} {config!r:.60}."
        )
    return config


def build_model(config: dict, **overrides):
    """A :class:`~gapkit.GAPRegressor` from a config table.

    Parameters
    ----------
    config : dict
        GAPRegressor parameters, as read by :func:`read_config`:
        ``descriptor`` is a table of SOAP parameters, ``baseline`` (optional)
        a table with a ``class`` (see
        :func:`gapkit.electrostatics.calculator_from_dict`). Not changed.
    **overrides
        Parameters that replace those of ``config``; a None value leaves the
        config's (or the default) in place.

    Returns
    -------
    GAPRegressor
        Unfitted.

    Raises
    ------
    InvalidParameterError
        ``config`` is not a table, names an unknown parameter (at the top
        level or in ``descriptor``), or ``descriptor`` / ``baseline`` is not a
        table.

    Examples
    --------
    >>> model = build_model({"descriptor": {"r_cut": 4.0}, "n_sparse": 50}, random_state=0)
    >>> model.n_sparse, model.random_state, model.descriptor.r_cut
    (50, 0, 4.0)
    """
    from .descriptors import SOAP
    from .estimator import GAPRegressor

    if not isinstance(config, dict):
        raise InvalidParameterError(
            f"config: expected a table of GAPRegressor parameters; got {config!r:.60}."
        )
    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    soap_params = config.pop("descriptor", {})
    if not isinstance(soap_params, dict):
        raise InvalidParameterError(
            "config: 'descriptor' must be a table of SOAP parameters, e.g. "
            f'{{"r_cut": 5.0}}; got {soap_params!r}.'
        )
    allowed = set(GAPRegressor().get_params(deep=False)) - {"descriptor"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InvalidParameterError(
            f"config: unknown parameter(s) {', '.join(unknown)}; allowed: "
            f"descriptor, {', '.join(sorted(allowed))}."
        )
    soap_allowed = set(SOAP().get_params())
    bad = sorted(set(soap_params) - soap_allowed)
    if bad:
        raise InvalidParameterError(
            f"config: unknown descriptor parameter(s) {', '.join(bad)}; allowed: "
            f"{', '.join(sorted(soap_allowed))}."
        )
    baseline = config.pop("baseline", None)
    if baseline is not None:
        if not isinstance(baseline, dict) or "class" not in baseline:
            raise InvalidParameterError(
                "config: 'baseline' must be a table with a 'class' (Coulomb, Ewald or PME) "
                f"and its parameters, e.g. {_BASELINE_EXAMPLE}; got {baseline!r:.80}."
            )
        from .electrostatics import calculator_from_dict

        config["baseline"] = calculator_from_dict(baseline)
    return GAPRegressor(SOAP(**soap_params), **config)


def check_model_output(path, owner: str):
    """Check, before any work, that a model may be written to ``path``.

    The directory must exist and be writable (see
    :func:`gapkit._files.check_output_path`), and an existing file there must
    be a gapkit model (it is replaced; only its header is read): a data file,
    a plot or anything else is refused rather than overwritten.

    Parameters
    ----------
    path : str or path-like
        The model file as the user gave it.
    owner : str
        Prefix of the error message (``"gapkit fit"``).

    Returns
    -------
    Path

    Raises
    ------
    InvalidParameterError
        The path cannot be written, or holds a file that is not a gapkit model.
    """
    from .io import is_model_file

    path = check_output_path(path, owner)
    if path.exists() and not is_model_file(path):
        raise InvalidParameterError(
            f"{owner}: {str(path)!r} exists and is not a gapkit model file; it is left "
            "untouched: remove it or write the model elsewhere."
        )
    return path
