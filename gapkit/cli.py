"""Command line: ``gapkit fit``, ``eval``, ``learn`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .exceptions import GapkitError, InvalidParameterError

__all__ = ["main"]


def _read_config(path: Path | None) -> dict:
    """GAPRegressor parameters from a JSON or TOML file; ``descriptor`` is a table
    of SOAP parameters."""
    if path is None:
        return {}
    text = Path(path).read_text()
    if Path(path).suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError as err:  # Python 3.10
            raise InvalidParameterError(
                "TOML configs need Python >= 3.11; use a .json config."
            ) from err
        config = tomllib.loads(text)
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidParameterError(f"config {path}: not valid JSON ({err}).") from err
    if not isinstance(config, dict):
        raise InvalidParameterError(f"config {path}: expected a table of parameters.")
    return config


def build_model(config: dict, **overrides):
    """A :class:`GAPRegressor` from a config dict (as read from a config file)."""
    from .descriptors import SOAP
    from .estimator import GAPRegressor

    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    soap_params = config.pop("descriptor", {})
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
        from .electrostatics import calculator_from_dict

        config["baseline"] = calculator_from_dict(baseline)
    return GAPRegressor(SOAP(**soap_params), **config)


def _say_device(device: str | None) -> None:
    """Print where the numeric work will run (and why, for 'auto')."""
    if device in (None, "cpu"):
        return
    from .backend import cuda_available

    ok, why = cuda_available()
    if device == "auto":
        print(f"device 'auto': using the {'GPU' if ok else 'CPU'} ({why})")
    elif ok:
        print(f"device 'cuda': {why}")


def _report_fit(model, seconds: float) -> None:
    m = len(model.coefficients_)
    obs = model.n_observations_
    print(
        f"fitted {m} sparse points ({', '.join(model.species_)}) to {obs['energy']} energies, "
        f"{obs['forces']} force components and {obs['virial']} virial components "
        f"in {seconds:.1f} s on the {model.device_.upper()}"
    )
    print("e0 (eV): " + ", ".join(f"{k} {v:.6f}" for k, v in model.e0_.items()))


def _cmd_fit(args) -> int:
    from .io import read_structures

    config = _read_config(args.config)
    model = build_model(
        config,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        n_jobs=args.workers if args.workers is not None else args.n_jobs,
        scheduler=args.scheduler,
        device=args.device,
    )
    model.set_params(verbose=not args.quiet)
    _say_device(model.device)
    frames = read_structures(args.train)
    print(f"read {len(frames)} structures from {args.train}")
    t0 = time.perf_counter()
    model.fit(frames)
    _report_fit(model, time.perf_counter() - t0)
    model.save(args.output)
    print(f"model written to {Path(args.output).resolve()}")
    if args.test is not None:
        test = read_structures(args.test)
        print(f"\nerrors on {args.test}:")
        print(model.evaluate(test))
    return 0


def _cmd_eval(args) -> int:
    from ._validation import read_labels
    from .io import load, read_structures
    from .metrics import calibration_metrics, evaluate_predictions

    model = load(args.model, device=args.device)
    _say_device(model.device)
    overrides = {"energy_key": args.energy_key, "forces_key": args.forces_key,
                 "stress_key": args.stress_key, "n_jobs": args.n_jobs}
    model.set_params(**{k: v for k, v in overrides.items() if v is not None})
    model.set_params(verbose=not args.quiet)
    if args.calibrate is not None:
        model.calibrate(read_structures(args.calibrate))
        print(f"std scale factor fitted on {args.calibrate}: {model.std_scale_:.4g}")
        if args.output is not None:
            model.save(args.output)
            print(f"calibrated model written to {Path(args.output).resolve()}")
    frames = read_structures(args.test)
    labels = [read_labels(a, model.energy_key, model.forces_key, model.stress_key)
              for a in frames]
    want_std = args.uncertainty or args.plot_calibration is not None
    predictions = model.predict_all(frames, return_std=want_std)
    print(f"errors of {args.model} on {args.test}:")
    print(evaluate_predictions(frames, labels, predictions))
    if want_std:
        f_err, f_std, e_err, e_std, a_err, a_std = [], [], [], [], [], []
        for lab, pred in zip(labels, predictions, strict=True):
            if lab.forces is not None:
                diff = pred["forces"] - lab.forces
                f_err.append(diff.ravel())
                f_std.append(pred["forces_std"].ravel())
                a_err.append(np.linalg.norm(diff, axis=1))
                a_std.append(np.sqrt(np.sum(pred["forces_std"] ** 2, axis=1)))
            if lab.energy is not None:
                e_err.append(pred["energy"] - lab.energy)
                e_std.append(pred["energy_std"])
        rows = []
        if f_err:
            rows.append(("force components",
                         calibration_metrics(np.concatenate(f_err), np.concatenate(f_std))))
            per_atom = calibration_metrics(np.concatenate(a_err), np.concatenate(a_std))
            rows.append(("forces per atom", {**per_atom, "coverage_1sigma": np.nan,
                                             "coverage_2sigma": np.nan, "scale": np.nan}))
        if e_err:
            rows.append(("energies", calibration_metrics(np.array(e_err), np.array(e_std))))
        print(f"\nuncertainty ({model.variance.upper()}, scale {model.std_scale_:.3g}):")
        print(f"{'':<18}{'in 1 std':>9}{'in 2 std':>9}{'Spearman':>9}{'scale':>8}")
        for name, m in rows:
            print(f"{name:<18}{m['coverage_1sigma']:>9.3f}{m['coverage_2sigma']:>9.3f}"
                  f"{m['spearman']:>9.3f}{m['scale']:>8.3f}")
        print("(calibrated Gaussian errors: 0.683 in 1 std, 0.954 in 2 std, scale 1)")
        if args.plot_calibration is not None and f_err:
            from .plots import calibration_plot

            calibration_plot(np.concatenate(f_err), np.concatenate(f_std), args.plot_calibration)
            print(f"calibration plot written to {Path(args.plot_calibration).resolve()}")
    if args.plot is not None:
        from .plots import parity_plot

        parity_plot(frames, labels, predictions, args.plot)
        print(f"parity plot written to {Path(args.plot).resolve()}")
    return 0


def _cmd_demo(args) -> int:
    from .datasets import load_cu_emt
    from .descriptors import SOAP
    from .estimator import GAPRegressor

    train, test = load_cu_emt()
    print(f"bundled Cu/EMT data: {len(train)} training and {len(test)} test structures")
    model = GAPRegressor(
        SOAP(r_cut=4.0, n_max=6, l_max=4, sigma=0.5),
        n_sparse=200, sigma_energy=0.001, sigma_force=0.03, sigma_virial=0.02,
        n_jobs=args.n_jobs, random_state=0, verbose=not args.quiet, device=args.device,
    )
    _say_device(args.device)
    print("fitting SOAP(r_cut=4, n_max=6, l_max=4, sigma=0.5), zeta=4, 200 CUR sparse points")
    t0 = time.perf_counter()
    model.fit(train)
    _report_fit(model, time.perf_counter() - t0)
    print("\ntest-set errors:")
    print(model.evaluate(test))
    model.save(args.output)
    print(f"\nmodel written to {Path(args.output).resolve()}")
    print(f"use it: gapkit eval {args.output} TEST.xyz, or in Python: "
          f"atoms.calc = gapkit.load({str(args.output)!r}).calculator()")
    return 0


def _cmd_learn(args) -> int:
    from .active.runner import run_learning

    config = _read_config(args.config)
    if args.device is not None:
        config.setdefault("model", {})["device"] = args.device
    _say_device(config.get("model", {}).get("device"))
    run_learning(config)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Fit and evaluate SOAP-GAP interatomic potentials."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def device_option(p, default=None):
        p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=default,
                       help="where kernels, solve and predictions run: NumPy on the CPU or "
                       "CuPy on an NVIDIA GPU; 'auto' takes the GPU when there is one "
                       f"(default: {default or 'the config or model setting, else cpu'})")

    def label_options(p):
        p.add_argument("--energy-key", help="info key of the energies (default: auto)")
        p.add_argument("--forces-key", help="arrays key of the forces (default: auto)")
        p.add_argument("--stress-key", help="info key of the stresses (default: auto)")
        p.add_argument("--n-jobs", type=int, default=None, help="worker processes")
        device_option(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    fit = sub.add_parser("fit", help="fit a model to labelled structures")
    fit.add_argument("train", type=Path, help="training structures (extxyz)")
    fit.add_argument("--config", type=Path, help="JSON or TOML file of model parameters")
    fit.add_argument("-o", "--output", type=Path, required=True, help="model file to write")
    fit.add_argument("--test", type=Path, help="also print errors on these structures")
    fit.add_argument("--scheduler", help="Dask: 'local' (start a LocalCluster) or the address "
                     "of a running scheduler")
    fit.add_argument("--workers", type=int, help="workers of the local Dask cluster")
    label_options(fit)
    fit.set_defaults(func=_cmd_fit)

    ev = sub.add_parser("eval", help="errors of a model on labelled structures")
    ev.add_argument("model", type=Path)
    ev.add_argument("test", type=Path)
    ev.add_argument("--plot", type=Path, help="write a parity plot (PNG)")
    ev.add_argument("--uncertainty", action="store_true",
                    help="report how well the predicted stds match the errors")
    ev.add_argument("--plot-calibration", type=Path, help="write a calibration plot (PNG)")
    ev.add_argument("--calibrate", type=Path,
                    help="fit the std scale factor on these (validation) structures first")
    ev.add_argument("-o", "--output", type=Path, help="with --calibrate: write the calibrated "
                    "model here")
    label_options(ev)
    ev.set_defaults(func=_cmd_eval)

    learn = sub.add_parser("learn", help="active learning (pool or on-the-fly) from a config")
    learn.add_argument("config", type=Path, help="JSON or TOML file: mode, model, reference, ...")
    device_option(learn)
    learn.set_defaults(func=_cmd_learn)

    demo = sub.add_parser("demo", help="fit the bundled Cu/EMT data and print test errors")
    demo.add_argument("-o", "--output", type=Path, default=Path("cu_emt.gap"))
    demo.add_argument("--n-jobs", type=int, default=1)
    device_option(demo, "cpu")
    demo.add_argument("-q", "--quiet", action="store_true")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gapkit`` command."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (GapkitError, FileNotFoundError) as err:
        print(f"gapkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
