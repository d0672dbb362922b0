"""Command line: ``gapkit fit``, ``eval``, ``learn`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ._files import check_output_path
from .config import build_model, check_model_output, read_config
from .exceptions import GapkitError, InvalidParameterError

__all__ = ["main"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def _check_png_output(path, owner: str) -> Path:
    """Check a plot path before the work: writable, and an existing file is a PNG
    (anything else there is refused, not overwritten)."""
    path = check_output_path(path, owner)
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                raise InvalidParameterError(
                    f"{owner}: {str(path)!r} exists and is not a PNG image; it is left "
                    "untouched: remove it or write the plot elsewhere."
                )
    return path


def _check_input(path, owner: str) -> None:
    """An input file named on the command line exists (checked before any work)."""
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"{owner}: no file at {str(path)!r}.")


def _cmd_fit(args) -> int:
    from .io import read_structures

    config = read_config(args.config)
    _check_input(args.train, "training data")
    _check_input(args.test, "--test")
    check_model_output(args.output, "-o/--output")
    if args.seed is not None:
        seed = args.seed
    elif config.get("random_state") is not None:
        seed = config["random_state"]
    else:
        seed = 0
    model = build_model(
        config,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        n_jobs=args.workers if args.workers is not None else args.n_jobs,
        scheduler=args.scheduler,
        device=args.device,
        random_state=seed,
    )
    model.set_params(verbose=not args.quiet)
    _say_device(model.device)
    print(f"seed {seed} (sparse-point selection; --seed to change)")
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


def _format_std_scales(model, digits: int = 4) -> str:
    """The std scales per kind as text: ``energy 6.57, forces 8.31, stress 9.68``."""
    return ", ".join(f"{k} {v:.{digits}g}" for k, v in model.std_scale_.items())


_METHODS = {
    "cross-validation": "fitted by {n_folds}-fold cross-validation over the training structures",
    "validation": "fitted on validation structures (calibrate)",
    "none": "unscaled: the GP's own stds",
}


def _calibration_source(model, calibrated_on=None) -> str:
    """How the std scales were obtained (``calibration_``), with the kinds that
    borrowed or kept a scale."""
    info = model.calibration_
    how = _METHODS.get(info.get("method"), "how they were obtained is not recorded")
    how = how.format(n_folds=info.get("n_folds"))
    if calibrated_on is not None:
        how = f"fitted on {calibrated_on} by --calibrate"
    notes = [
        f"{kind}: no held-out labels, " + (f"scale of {source}" if source else "1")
        for kind, source in info.get("borrowed", {}).items()
    ]
    if info.get("kept"):
        notes.append(f"{', '.join(info['kept'])}: previous scale kept")
    return "; ".join([how, *notes])


_CALIBRATION_COLUMNS = (
    ("n", 7, None),
    ("in 1σ", 8, "coverage_1sigma"),
    ("in 2σ", 8, "coverage_2sigma"),
    ("mean z²", 9, "mean_z2"),
    ("Spearman", 10, "spearman"),
    ("miscal. area", 14, "miscalibration_area"),
)


def _calibration_table(rows) -> str:
    """Rows ``(name, n, metrics)`` of :func:`gapkit.metrics.calibration_metrics`
    as a table; a NaN metric prints as a dash."""
    head = f"{'quantity':<24}" + "".join(f"{t:>{w}}" for t, w, _ in _CALIBRATION_COLUMNS)
    lines = [head, "-" * len(head)]
    for name, n, m in rows:
        cells = [f"{n:>{_CALIBRATION_COLUMNS[0][1]}d}"]
        for _, width, key in _CALIBRATION_COLUMNS[1:]:
            value = m.get(key, np.nan)
            cells.append(f"{'—':>{width}}" if not np.isfinite(value) else f"{value:>{width}.3f}")
        lines.append(f"{name:<24}" + "".join(cells))
    return "\n".join(lines)


def _report_uncertainty(model, labels, predictions, calibrated_on=None):
    """Print the calibration table of ``gapkit eval --uncertainty``; return the
    force-component errors and stds (for the calibration plot)."""
    from .metrics import calibration_metrics

    f_err, f_std, a_err, a_std, e_err, e_std, s_err, s_std = ([] for _ in range(8))
    for lab, pred in zip(labels, predictions, strict=True):
        if lab.forces is not None and "forces_std" in pred:
            diff = pred["forces"] - lab.forces
            f_err.append(diff.ravel())
            f_std.append(pred["forces_std"].ravel())
            a_err.append(np.linalg.norm(diff, axis=1))
            a_std.append(np.sqrt(np.sum(pred["forces_std"] ** 2, axis=1)))
        if lab.energy is not None and "energy_std" in pred:
            e_err.append(pred["energy"] - lab.energy)
            e_std.append(pred["energy_std"])
        if lab.stress is not None and "stress_std" in pred:
            s_err.append(np.ravel(pred["stress"] - lab.stress))
            s_std.append(np.ravel(pred["stress_std"]))
    forces = (np.concatenate(f_err), np.concatenate(f_std)) if f_err else None
    rows = []
    if forces is not None:
        rows.append(("force components", forces[0].size, calibration_metrics(*forces)))
        per_atom = calibration_metrics(np.concatenate(a_err), np.concatenate(a_std))
        # Coverage of central Gaussian intervals does not apply to a norm.
        for key in ("coverage_1sigma", "coverage_2sigma", "miscalibration_area"):
            per_atom[key] = np.nan
        rows.append(("forces per atom (norm)", sum(x.size for x in a_err), per_atom))
    if e_err:
        rows.append(("energies", len(e_err), calibration_metrics(np.array(e_err), np.array(e_std))))
    if s_err:
        s_err, s_std = np.concatenate(s_err), np.concatenate(s_std)
        rows.append(("stress components", s_err.size, calibration_metrics(s_err, s_std)))
    print(
        f"\nuncertainty: {model.variance.upper()} variance, std scales "
        f"{_format_std_scales(model, 3)} ({_calibration_source(model, calibrated_on)})"
    )
    if not rows:
        print("no labels with predicted stds to compare")
        return forces
    print(_calibration_table(rows))
    print(
        "calibrated Gaussian errors: 0.683 in 1σ, 0.954 in 2σ, mean z² 1, area 0 "
        "(± about 0.3/sqrt(n))\n"
        "Spearman: rank correlation of std and |error|, 1 at best; energies: the same z "
        "per atom\n"
        "per atom: |force error| vs the norm of its three stds (—: coverage needs "
        "Gaussian components)"
    )
    return forces


def _cmd_eval(args) -> int:
    from ._validation import read_labels
    from .estimator import load
    from .io import read_structures
    from .metrics import evaluate_predictions

    if args.output is not None and args.calibrate is None:
        raise InvalidParameterError(
            "-o/--output writes the calibrated model and needs --calibrate VALIDATION.xyz; "
            "without it nothing would be written."
        )
    _check_input(args.test, "test data")
    _check_input(args.calibrate, "--calibrate")
    if args.output is not None:
        check_model_output(args.output, "-o/--output")
    outputs = [
        (args.output, "-o/--output"),
        (args.plot, "--plot"),
        (args.plot_calibration, "--plot-calibration"),
    ]
    given = [(Path(p).resolve(), o) for p, o in outputs if p is not None]
    for k, (path, option) in enumerate(given):
        for other_path, other in given[:k]:
            if path == other_path:
                raise InvalidParameterError(
                    f"gapkit eval: {other} and {option} are the same file {str(path)!r}; "
                    "one would overwrite the other."
                )
    for plot, option in outputs[1:]:
        if plot is not None:
            _check_png_output(plot, option)
    model = load(args.model, device=args.device)
    _say_device(model.device)
    overrides = {
        "energy_key": args.energy_key,
        "forces_key": args.forces_key,
        "stress_key": args.stress_key,
        "n_jobs": args.n_jobs,
    }
    model.set_params(**{k: v for k, v in overrides.items() if v is not None})
    model.set_params(verbose=not args.quiet)
    if args.calibrate is not None:
        model.calibrate(read_structures(args.calibrate))
        print(f"std scales fitted on {args.calibrate}: {_format_std_scales(model)}")
        if args.output is not None:
            model.save(args.output)
            print(f"calibrated model written to {Path(args.output).resolve()}")
    frames = read_structures(args.test)
    labels = [read_labels(a, model.energy_key, model.forces_key, model.stress_key) for a in frames]
    want_std = args.uncertainty or args.plot_calibration is not None
    predictions = model.predict_all(frames, return_std=want_std)
    print(f"errors of {args.model} on {args.test}:")
    print(evaluate_predictions(frames, labels, predictions))
    if want_std:
        forces = _report_uncertainty(model, labels, predictions, args.calibrate)
        if args.plot_calibration is not None:
            if forces is None:
                print("no force labels: no calibration plot written")
            else:
                from .plots import calibration_plot

                calibration_plot(*forces, args.plot_calibration)
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

    check_model_output(args.output, "-o/--output")
    train, test = load_cu_emt()
    print(f"bundled Cu/EMT data: {len(train)} training and {len(test)} test structures")
    model = GAPRegressor(
        SOAP(r_cut=4.0, n_max=6, l_max=4, sigma=0.5),
        n_sparse=200,
        sigma_energy=0.001,
        sigma_force=0.03,
        sigma_virial=0.02,
        n_jobs=args.n_jobs,
        random_state=0,
        verbose=not args.quiet,
        device=args.device,
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
    print(
        f"use it: gapkit eval {args.output} TEST.xyz, or in Python: "
        f"atoms.calc = gapkit.load({str(args.output)!r}).calculator()"
    )
    return 0


def _cmd_learn(args) -> int:
    from .active.runner import run_learning

    config = read_config(args.config)
    model = config.get("model", {})
    if args.device is not None and isinstance(model, dict):
        config["model"] = {**model, "device": args.device}
    if isinstance(config.get("model"), dict):
        _say_device(config["model"].get("device"))
    run_learning(config)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Fit and evaluate SOAP-GAP interatomic potentials."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def device_option(p, default=None):
        p.add_argument(
            "--device",
            choices=["cpu", "cuda", "auto"],
            default=default,
            help="where kernels, solve and predictions run: NumPy on the CPU or "
            "CuPy on an NVIDIA GPU; 'auto' takes the GPU when there is one "
            f"(default: {default or 'the config or model setting, else cpu'})",
        )

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
    fit.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed of the sparse-point selection (default: the config's "
        "random_state, else 0), so that two fits of the same data agree",
    )
    fit.add_argument(
        "--scheduler",
        help="Dask: 'local' (start a LocalCluster) or the address of a running scheduler",
    )
    fit.add_argument("--workers", type=int, help="workers of the local Dask cluster")
    label_options(fit)
    fit.set_defaults(func=_cmd_fit)

    ev = sub.add_parser("eval", help="errors of a model on labelled structures")
    ev.add_argument("model", type=Path)
    ev.add_argument("test", type=Path)
    ev.add_argument("--plot", type=Path, help="write a parity plot (PNG)")
    ev.add_argument(
        "--uncertainty",
        action="store_true",
        help="report how well the predicted stds match the errors: coverage in 1σ and "
        "2σ, mean z², Spearman and miscalibration area of forces, energies and stresses",
    )
    ev.add_argument(
        "--plot-calibration",
        type=Path,
        help="write the reliability diagram and |error| vs std of the force components (PNG)",
    )
    ev.add_argument(
        "--calibrate",
        type=Path,
        help="fit the std scale factor on these (validation) structures first",
    )
    ev.add_argument(
        "-o", "--output", type=Path, help="with --calibrate: write the calibrated model here"
    )
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
    """Entry point of the ``gapkit`` command.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for an error of the user's input
        (a bad option, config, path or file), reported on stderr as
        ``gapkit COMMAND: error: ...`` without a traceback.
    """
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (GapkitError, OSError) as err:  # OSError: FileNotFoundError, PermissionError, ...
        print(f"gapkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:
        print(
            f"gapkit {args.command}: error: out of memory ({err or 'MemoryError'}); a "
            "file may ask for more memory than it should hold (a damaged or crafted model "
            "or data file?), or the problem is too large for this machine (fewer sparse "
            "points or structures, or more memory).",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
