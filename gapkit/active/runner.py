"""``gapkit learn CONFIG``: pool-based or on-the-fly learning from a config file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read, write
from sklearn.base import clone

from ..exceptions import InvalidParameterError
from .incremental import IncrementalGAP, most_uncertain_environments
from .otf import OnTheFlyLearner
from .selection import label_structures, select_batch

__all__ = ["reference_calculator", "run_learning"]


def reference_calculator(spec: dict):
    """An ASE calculator from ``{"name": "emt"}`` or
    ``{"name": "tblite", "method": "GFN1-xTB"}`` (the ``tblite`` extra)."""
    name = str(spec.get("name", "")).lower()
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if name == "tblite":
        try:
            from tblite.ase import TBLite
        except ImportError as err:
            raise InvalidParameterError(
                "reference 'tblite' needs the tblite package: pip install 'gapkit[xtb]'."
            ) from err
        options = {k: v for k, v in spec.items() if k != "name"}
        options.setdefault("method", "GFN1-xTB")
        options.setdefault("verbosity", 0)
        return TBLite(**options)
    raise InvalidParameterError(
        f"learn: unknown reference calculator {spec.get('name')!r}; use 'emt' or 'tblite'."
    )


def _structure(spec) -> object:
    if isinstance(spec, str):
        return read(spec)
    if isinstance(spec, dict) and "bulk" in spec:
        from ase.build import bulk

        spec = dict(spec)
        repeat = spec.pop("repeat", (1, 1, 1))
        return bulk(spec.pop("bulk"), **spec).repeat(repeat)
    raise InvalidParameterError(
        "learn: 'structure' must be a file name or {'bulk': symbol, ...ase.build.bulk options}."
    )


def run_learning(config: dict, *, log=print):
    """Run what a ``gapkit learn`` config asks for; returns the final model."""
    from ..cli import build_model

    config = dict(config)
    mode = config.pop("mode", None)
    model = build_model(config.pop("model", {}))
    reference = reference_calculator(config.pop("reference", {"name": "emt"}))
    output = Path(config.pop("output", "learn_data.xyz"))
    model_output = Path(config.pop("model_output", output.with_suffix(".gap")))
    if mode == "otf":
        atoms = _structure(config.pop("structure"))
        temperature = float(config.pop("temperature_K", 300.0))
        rng = np.random.default_rng(config.pop("seed", 0))
        masses = atoms.get_masses()[:, None]
        atoms.set_momenta(rng.normal(size=(len(atoms), 3))
                          * np.sqrt(temperature * units.kB * masses))
        learner = OnTheFlyLearner(
            model, reference, threshold=float(config.pop("threshold", 0.1)),
            relative=bool(config.pop("relative", False)), data_path=output,
            n_sparse_add=int(config.pop("n_sparse_add", 10)),
        )
        steps = int(config.pop("steps", 1000))
        timestep = float(config.pop("timestep_fs", 1.0)) * units.fs
        thermostat = config.pop("thermostat", "nve")
        kwargs = {}
        if thermostat == "langevin":
            from ase.md.langevin import Langevin

            dynamics = Langevin
            kwargs = {"temperature_K": temperature,
                      "friction": float(config.pop("friction", 0.02)), "fixcm": False}
        elif thermostat == "nve":
            from ase.md.verlet import VelocityVerlet

            dynamics = VelocityVerlet
        else:
            raise InvalidParameterError(f"learn: unknown thermostat {thermostat!r}.")
        _no_leftovers(config)
        result = learner.run(atoms, steps, timestep=timestep, dynamics=dynamics, **kwargs)
        log(f"on-the-fly: {result.steps} steps, {result.reference_calls} reference calls in "
            f"this run, {result.n_labelled} labelled structures in {output}")
        final = result.model
    elif mode == "pool":
        pool = read(config.pop("pool"), ":")
        initial = int(config.pop("initial", 5))
        batch = int(config.pop("batch", 5))
        rounds = int(config.pop("rounds", 5))
        seed = int(config.pop("seed", 0))
        update = config.pop("update", "refit")
        if update not in ("refit", "incremental"):
            raise InvalidParameterError(
                f"learn: 'update' must be 'refit' or 'incremental'; got {update!r}.")
        if update == "refit" and "n_sparse_add" in config:
            raise InvalidParameterError(
                "learn: 'n_sparse_add' is used with \"update\": \"incremental\" only (a refit "
                "selects the sparse points again by the model's sparse_method).")
        n_sparse_add = int(config.pop("n_sparse_add", 10))
        if n_sparse_add < 0:
            raise InvalidParameterError(
                f"learn: 'n_sparse_add' must be >= 0; got {n_sparse_add}.")
        _no_leftovers(config)
        labelled = read(output, ":") if output.exists() and output.stat().st_size else []
        taken = [int(a.info["pool_index"]) for a in labelled]
        if not labelled:
            start = np.random.default_rng(seed).permutation(len(pool))[:initial].tolist()
            labelled = _label_and_append(pool, start, reference, output)
            taken = start
            log(f"labelled {len(start)} random structures to start")
        incremental = IncrementalGAP(clone(model), labelled) if update == "incremental" else None
        final = model
        for r in range(rounds):
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
                grown = [most_uncertain_environments(incremental.model, a, n_sparse_add)
                         for a in new]
                incremental.add_sparse_points(np.vstack([g[0] for g in grown]),
                                              np.concatenate([g[1] for g in grown]))
                incremental.add_structures(new)
        final = incremental.model if incremental else clone(model).fit(labelled)
    else:
        raise InvalidParameterError(f"learn: 'mode' must be 'otf' or 'pool'; got {mode!r}.")
    final.save(model_output)
    log(f"model written to {model_output.resolve()}")
    return final


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
        raise InvalidParameterError(f"learn: unknown config key(s) {', '.join(sorted(config))}.")
