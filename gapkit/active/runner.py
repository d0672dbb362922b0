"""``gapkit learn CONFIG``: pool-based or on-the-fly learning from a config file.

The whole config is checked before the first reference calculation: every key
is known, every number converts and lies in its range, the files it reads
exist and parse, and the files it writes can be written without destroying
anything that is not the output of an earlier run of the same kind (which is
then resumed). Each problem is an :class:`~gapkit.exceptions.InvalidParameterError`
naming the key; the command line prints it as ``gapkit learn: error: ...``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read, write
from sklearn.base import clone

from .._files import check_output_path
from .._validation import check_structures
from ..config import build_model, check_model_output
from ..exceptions import InvalidParameterError
from .incremental import IncrementalGAP, most_uncertain_environments
from .otf import OnTheFlyLearner, drop_partial_frame, read_run_data
from .selection import label_structures, select_batch

__all__ = ["reference_calculator", "run_learning"]

_OWNER = "learn config"

#: Keywords of :func:`ase.build.bulk` a ``structure`` table may give (besides
#: ``bulk``, the element, and ``repeat``).
_BULK_KEYS = (
    "crystalstructure",
    "a",
    "b",
    "c",
    "alpha",
    "covera",
    "u",
    "orthorhombic",
    "cubic",
    "basis",
)


def _number(
    config: dict,
    key: str,
    default,
    *,
    integer: bool = False,
    minimum=None,
    strict: bool = False,
    unit: str = "",
):
    """Pop ``key`` from ``config`` as a finite number in range, or say what is wrong.

    Parameters
    ----------
    config : dict
        The config table; ``key`` is removed from it.
    key : str
    default : int or float
        The value when ``key`` is absent.
    integer : bool, default=False
        Whether the value must be a whole number (returned as ``int``).
    minimum : float, default=None
        Lower bound, if any.
    strict : bool, default=False
        Whether the bound itself is excluded.
    unit : str, default=""
        Unit named in the message.

    Returns
    -------
    int or float

    Raises
    ------
    InvalidParameterError
        Not a number (strings and booleans included), NaN or infinite, not
        whole for an integer key, or out of range.
    """
    value = config.pop(key, default)
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    ok = ok and math.isfinite(value) and (not integer or float(value).is_integer())
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum}"
        unit = f" ({unit})" if unit else ""
        raise InvalidParameterError(
            f"{_OWNER}: {key!r} must be {kind}{bound}{unit}; got {value!r}."
        )
    return int(value) if integer else float(value)


def _flag(config: dict, key: str, default: bool) -> bool:
    """Pop ``key`` from ``config`` as a boolean (true/false, not a string or number)."""
    value = config.pop(key, default)
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{_OWNER}: {key!r} must be true or false; got {value!r}.")
    return bool(value)


def _path(config: dict, key: str, default) -> Path:
    """Pop ``key`` from ``config`` as a file path."""
    value = config.pop(key, default)
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InvalidParameterError(f"{_OWNER}: {key!r} must be a file name; got {value!r}.")
    return Path(value)


def _unknown_keys(spec: dict, allowed, where: str) -> None:
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise InvalidParameterError(
            f"{_OWNER}: unknown key(s) {', '.join(map(repr, unknown))} in {where}; allowed: "
            f"{', '.join(allowed)}."
        )


def reference_calculator(spec: dict):
    """An ASE calculator from a ``reference`` table.

    Parameters
    ----------
    spec : dict
        ``{"name": "emt"}`` (ASE's EMT; ``asap_cutoff`` may be given) or
        ``{"name": "tblite", "method": "GFN1-xTB", ...}`` (the ``tblite``
        extra; the other keys are keywords of ``tblite.ase.TBLite``).

    Returns
    -------
    ase.calculators.calculator.Calculator

    Raises
    ------
    InvalidParameterError
        ``spec`` is not a table, names an unknown calculator, or gives a key
        the calculator does not take (the message lists those it takes), or
        tblite is asked for but not installed.
    """
    if not isinstance(spec, dict):
        raise InvalidParameterError(
            f'{_OWNER}: \'reference\' must be a table such as {{"name": "emt"}} or '
            f'{{"name": "tblite", "method": "GFN1-xTB"}}; got {spec!r}.'
        )
    name = str(spec.get("name", "")).lower()
    options = {k: v for k, v in spec.items() if k != "name"}
    if name == "emt":
        from ase.calculators.emt import EMT

        _unknown_keys(options, ["name", *EMT.default_parameters], "'reference' (emt)")
        return EMT(**options)
    if name == "tblite":
        try:
            from tblite.ase import TBLite
        except ImportError as err:
            raise InvalidParameterError(
                "reference 'tblite' needs the tblite package: pip install 'gapkit[xtb]'."
            ) from err
        # TBLite stores any keyword without a word: a misspelt one would be ignored
        _unknown_keys(options, ["name", *TBLite.default_parameters], "'reference' (tblite)")
        options.setdefault("method", "GFN1-xTB")
        options.setdefault("verbosity", 0)
        return TBLite(**options)
    raise InvalidParameterError(
        f"{_OWNER}: unknown reference calculator {spec.get('name')!r}; use 'emt' or 'tblite'."
    )


def _read_file(path, key: str, index):
    """Structures of an input file named by ``key``, with errors that name both."""
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError(f"{_OWNER}: {key!r}: no file at {str(path)!r}.")
    try:
        return read(path, index)
    except Exception as err:  # noqa: BLE001 - any reader error: the file is unusable
        raise InvalidParameterError(
            f"{_OWNER}: {key!r}: cannot read structures from {str(path)!r} "
            f"({type(err).__name__}: {err})."
        ) from err


def _structure(spec):
    """The starting structure of an on-the-fly run from its ``structure`` value."""
    if isinstance(spec, (str, os.PathLike)):
        return _read_file(spec, "structure", -1)
    if isinstance(spec, dict) and "bulk" in spec:
        from ase.build import bulk

        spec = dict(spec)
        _unknown_keys(spec, ["bulk", *_BULK_KEYS, "repeat"], "'structure'")
        repeat = spec.pop("repeat", (1, 1, 1))
        if isinstance(repeat, (int, np.integer)) and not isinstance(repeat, bool):
            repeat = (repeat,) * 3
        if not (
            isinstance(repeat, (list, tuple))
            and len(repeat) == 3
            and all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                for n in repeat
            )
        ):
            raise InvalidParameterError(
                f"{_OWNER}: 'structure': 'repeat' must be three integers >= 1 (or one); "
                f"got {repeat!r}."
            )
        symbol = spec.pop("bulk")
        try:
            atoms = bulk(symbol, **spec)
        except TypeError as err:  # a keyword bulk() does not take (or of the wrong type)
            raise InvalidParameterError(
                f"{_OWNER}: 'structure': ase.build.bulk({symbol!r}, ...) refused the "
                f"keywords {spec!r} ({err}); allowed keys: bulk, {', '.join(_BULK_KEYS)}, "
                "repeat."
            ) from err
        except (ValueError, KeyError, RuntimeError) as err:
            raise InvalidParameterError(
                f"{_OWNER}: 'structure': ase.build.bulk cannot build {symbol!r} with "
                f"{spec!r}: {err}."
            ) from err
        return atoms.repeat(tuple(int(n) for n in repeat))
    raise InvalidParameterError(
        f"{_OWNER}: 'structure' must be a file name or {{'bulk': symbol, ...}} with keys of "
        f"ase.build.bulk ({', '.join(_BULK_KEYS)}) and 'repeat'; got {spec!r}."
    )


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def run_learning(config: dict, *, log=print):
    """Run what a ``gapkit learn`` config asks for.

    Parameters
    ----------
    config : dict
        ``mode`` (``"otf"`` or ``"pool"``), ``model`` (a table for
        :func:`gapkit.config.build_model`), ``reference`` (see
        :func:`reference_calculator`), ``output`` (the labelled structures,
        extended XYZ; an existing one is resumed), ``model_output`` and the
        keys of the mode. Not changed.
    log : callable, default=print
        Receives the progress lines.

    Returns
    -------
    GAPRegressor
        The final model (also written to ``model_output``).

    Raises
    ------
    InvalidParameterError
        Any problem of the config, found before the first reference
        calculation (see the module docstring).
    InvalidStructureError
        The existing ``output`` of an earlier run is damaged.
    """
    if not isinstance(config, dict):
        raise InvalidParameterError(f"{_OWNER}: expected a table; got {config!r:.60}.")
    config = dict(config)
    mode = config.pop("mode", None)
    if mode not in ("otf", "pool"):
        raise InvalidParameterError(f"{_OWNER}: 'mode' must be 'otf' or 'pool'; got {mode!r}.")
    model_spec = config.pop("model", {})
    if not isinstance(model_spec, dict):
        raise InvalidParameterError(
            f"{_OWNER}: 'model' must be a table of GAPRegressor parameters; got {model_spec!r:.60}."
        )
    model = build_model(model_spec)
    check_model_settings(model, f"{_OWNER}: 'model'")
    reference = reference_calculator(config.pop("reference", {"name": "emt"}))
    output = _path(config, "output", "learn_data.xyz")
    model_output = _path(config, "model_output", output.with_suffix(".gap"))
    check_output_path(output, f"{_OWNER} 'output'")
    if _same_file(output, model_output):
        raise InvalidParameterError(
            f"{_OWNER}: 'output' (the labelled structures) and 'model_output' are the same "
            f"file {str(output)!r}; give 'model_output' another name."
        )
    check_model_output(model_output, f"{_OWNER} 'model_output'")
    if mode == "otf":
        final = _run_otf(config, model, reference, output, model_output, log)
    else:
        final = _run_pool(config, model, reference, output, log)
    final.save(model_output)
    log(f"model written to {model_output.resolve()}")
    return final


def _run_otf(config: dict, model, reference, output: Path, model_output: Path, log):
    if "structure" not in config:
        raise InvalidParameterError(
            f"{_OWNER}: mode 'otf' needs 'structure': a file name or {{'bulk': symbol, ...}} "
            "(e.g. {'bulk': 'Cu', 'cubic': true, 'repeat': [2, 2, 2]})."
        )
    atoms = _structure(config.pop("structure"))
    check_structures([atoms], f"{_OWNER}: 'structure'")
    _check_species_of(model, [atoms], "'structure'")
    temperature = _number(config, "temperature_K", 300.0, minimum=0, unit="K")
    seed = _number(config, "seed", 0, integer=True, minimum=0)
    threshold = _number(config, "threshold", 0.1, minimum=0, strict=True)
    relative = _flag(config, "relative", False)
    n_sparse_add = _number(config, "n_sparse_add", 10, integer=True, minimum=0)
    steps = _number(config, "steps", 1000, integer=True, minimum=0)
    timestep = _number(config, "timestep_fs", 1.0, minimum=0, strict=True, unit="fs")
    thermostat = config.pop("thermostat", "nve")
    kwargs = {}
    if thermostat == "langevin":
        from ase.md.langevin import Langevin

        dynamics = Langevin
        kwargs = {
            "temperature_K": temperature,
            "fixcm": False,
            "friction": _number(config, "friction", 0.02, minimum=0, unit="per ASE time unit"),
        }
    elif thermostat == "nve":
        from ase.md.verlet import VelocityVerlet

        dynamics = VelocityVerlet
        if "friction" in config:
            raise InvalidParameterError(
                f'{_OWNER}: \'friction\' is used with "thermostat": "langevin" only.'
            )
    else:
        raise InvalidParameterError(
            f"{_OWNER}: 'thermostat' must be 'nve' or 'langevin'; got {thermostat!r}."
        )
    _no_leftovers(config)
    learner = OnTheFlyLearner(
        model,
        reference,
        threshold=threshold,
        relative=relative,
        data_path=output,
        n_sparse_add=n_sparse_add,
    )
    if _same_file(learner.checkpoint_path, model_output):
        raise InvalidParameterError(
            f"{_OWNER}: 'model_output' {str(model_output)!r} is the checkpoint file of the "
            "run; give it another name."
        )
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(temperature * units.kB * masses))
    result = learner.run(atoms, steps, timestep=timestep * units.fs, dynamics=dynamics, **kwargs)
    log(
        f"on-the-fly: {result.steps} steps, {result.reference_calls} reference calls in "
        f"this run, {result.n_labelled} labelled structures in {output}"
    )
    return result.model


def _run_pool(config: dict, model, reference, output: Path, log):
    if "pool" not in config:
        raise InvalidParameterError(
            f"{_OWNER}: mode 'pool' needs 'pool': the extended-XYZ file of the structures "
            "to choose from."
        )
    pool_path = _path(config, "pool", None)
    initial = _number(config, "initial", 5, integer=True, minimum=1)
    batch = _number(config, "batch", 5, integer=True, minimum=1)
    rounds = _number(config, "rounds", 5, integer=True, minimum=0)
    seed = _number(config, "seed", 0, integer=True, minimum=0)
    update = config.pop("update", "refit")
    if update not in ("refit", "incremental"):
        raise InvalidParameterError(
            f"{_OWNER}: 'update' must be 'refit' or 'incremental'; got {update!r}."
        )
    if update == "refit" and "n_sparse_add" in config:
        raise InvalidParameterError(
            f'{_OWNER}: \'n_sparse_add\' is used with "update": "incremental" only (a refit '
            "selects the sparse points again by the model's sparse_method)."
        )
    n_sparse_add = _number(config, "n_sparse_add", 10, integer=True, minimum=0)
    _no_leftovers(config)
    if _same_file(pool_path, output):
        raise InvalidParameterError(
            f"{_OWNER}: 'pool' and 'output' are the same file {str(output)!r}; the labelled "
            "structures go to another file."
        )
    pool = _read_file(pool_path, "pool", ":")
    if not pool:
        raise InvalidParameterError(f"{_OWNER}: 'pool': {str(pool_path)!r} holds no structures.")
    labelled, complete = read_run_data(output, f"{_OWNER} 'output'", key="pool_index")
    taken = []
    for k, atoms in enumerate(labelled, start=1):
        index = atoms.info["pool_index"]
        if not (isinstance(index, (int, np.integer)) and 0 <= index < len(pool)) or (
            index in taken
        ):
            raise InvalidParameterError(
                f"{_OWNER}: 'output' {str(output)!r}, frame {k} (counted from 1): pool_index "
                f"{index!r} is not a new index into the {len(pool)} structures of "
                f"{str(pool_path)!r}; is it the output of a run on another pool?"
            )
        taken.append(int(index))
    drop_partial_frame(output, complete, f"{_OWNER} 'output'")
    check_structures(pool, f"{_OWNER}: 'pool'")
    _check_species_of(model, pool, "'pool'")
    # rounds count in total, as steps do in otf mode: a resumed run does the rest
    done = max(0, -(-(len(taken) - initial) // batch)) if labelled else 0
    if not labelled:
        start = np.random.default_rng(seed).permutation(len(pool))[:initial].tolist()
        labelled = _label_and_append(pool, start, reference, output)
        taken = start
        log(f"labelled {len(start)} random structures to start")
    incremental = IncrementalGAP(clone(model), labelled) if update == "incremental" else None
    final = model
    for r in range(done, rounds):
        final = incremental.model if incremental else clone(model).fit(labelled)
        if len(taken) + batch > len(pool):
            break
        rest = [i for i in range(len(pool)) if i not in set(taken)]
        pick = [rest[i] for i in select_batch(final, [pool[i] for i in rest], batch)]
        new = _label_and_append(pool, pick, reference, output)
        labelled += new
        taken += pick
        log(f"round {r + 1}: labelled pool structures {pick} ({len(taken)} in all)")
        if incremental:  # new columns for the most uncertain environments, new rows
            grown = [most_uncertain_environments(incremental.model, a, n_sparse_add) for a in new]
            incremental.add_sparse_points(
                np.vstack([g[0] for g in grown]), np.concatenate([g[1] for g in grown])
            )
            incremental.add_structures(new)
    return incremental.model if incremental else clone(model).fit(labelled)


def check_model_settings(model, owner: str) -> None:
    """Check a model's parameters (and its descriptor's) before any reference call:
    a bad setting found after hours of reference calculations wastes them."""
    from .._params import GAP_CONSTRAINTS, validate_params
    from ..backend import resolve_device

    validate_params(model.get_params(deep=False), GAP_CONSTRAINTS, owner)
    if model.descriptor is not None:  # validates the SOAP settings (species or not)
        soap = clone(model.descriptor)
        if soap.species is None:
            soap.set_params(species=["H"])
        soap.n_features  # noqa: B018
    resolve_device(model.device, owner)


def _check_species_of(model, frames, what: str) -> None:
    species = None if model.descriptor is None else model.descriptor.species
    if species is None:
        return
    listed = set(model.descriptor.species_symbols)
    for k, atoms in enumerate(frames):
        unknown = sorted(set(atoms.get_chemical_symbols()) - listed)
        if unknown:
            raise InvalidParameterError(
                f"{_OWNER}: {what} structure {k} contains {', '.join(unknown)}, which the "
                f"model's descriptor species ({', '.join(sorted(listed))}) do not include."
            )


def _label_and_append(pool, indices, reference, output: Path) -> list:
    frames = label_structures([pool[i] for i in indices], reference)
    with open(output, "a") as fh:
        for i, atoms in zip(indices, frames, strict=True):
            atoms.info["pool_index"] = int(i)
            write(fh, atoms, format="extxyz")
        fh.flush()
        os.fsync(fh.fileno())
    return frames


def _no_leftovers(config: dict) -> None:
    if config:
        raise InvalidParameterError(
            f"{_OWNER}: unknown key(s) {', '.join(map(repr, sorted(config)))}."
        )
