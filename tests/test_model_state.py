"""Model files with a valid envelope but a wrong model state.

Each file is built from a real saved model: its header and arrays are read
with ``gapkit.io.read_model_file``, one thing is changed, and the result is
written with ``gapkit.io.write_model_file`` (so every checksum is right).
``gapkit.load`` must then refuse it with a ModelFileError naming the file and
the field.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from conftest import labelled

from gapkit import SOAP, GAPRegressor, load
from gapkit.cli import main
from gapkit.electrostatics import Ewald
from gapkit.exceptions import ModelFileError
from gapkit.io import read_model_file, write_model_file
from gapkit.model import MODEL_ARRAYS

#: Keys every model state must have (FittedGAP.to_file_state).
REQUIRED = (
    "descriptor",
    "species",
    "zeta",
    "e0",
    "residual",
    "jitter",
    "noise",
    "hyperparameters",
    "log_marginal_likelihood",
    "n_observations",
    "n_data",
    "sum_log_sigma",
    "variance",
    "std_scale",
    "baseline",
    "random_state",
)
FLOAT_ARRAYS = [name for name in MODEL_ARRAYS if name != "sparse_numbers"]


@pytest.fixture(scope="module")
def frames():
    """Four neutral Cu4Au4 cells labelled with EMT."""
    rng = np.random.default_rng(5)
    out = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 1, 1))
        symbols = np.array(["Cu"] * 8)
        symbols[rng.choice(8, 4, replace=False)] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.rattle(0.1, seed=k)
        out.append(labelled(atoms))
    return out


@pytest.fixture(scope="module")
def saved(frames, tmp_path_factory):
    """Header and arrays of a real model file (two species, an Ewald baseline)."""
    model = GAPRegressor(
        SOAP(r_cut=3.5, n_max=3, l_max=2),
        n_sparse=20,
        random_state=0,
        baseline=Ewald(charges={"Cu": 0.1, "Au": -0.1}),
    ).fit(frames)
    path = tmp_path_factory.mktemp("saved") / "model.gap"
    model.save(path)
    load(path)  # the untouched file loads
    return read_model_file(path)


def craft(tmp_path, saved, edit, name="crafted.gap"):
    """Write ``saved`` changed by ``edit(header, arrays)`` as a well-formed model file."""
    header = copy.deepcopy(saved[0])
    arrays = {k: v.copy() for k, v in saved[1].items()}
    edit(header, arrays)
    path = tmp_path / name
    write_model_file(path, header, arrays)
    read_model_file(path)  # the envelope is valid: only the model state is wrong
    return path


def refused(path, match):
    """pytest.raises for a ModelFileError that starts with the file's name."""
    return pytest.raises(ModelFileError, match="^" + re.escape(f"{path}: ") + match)


def setting(key, value):
    def edit(header, arrays):
        header["model"][key] = value

    return edit


def _e0(**changes):
    def edit(header, arrays):
        e0 = header["model"]["e0"]
        for key, value in changes.items():
            if value is None:
                del e0[key]
            else:
                e0[key] = value

    return edit


def _pop(*keys):
    def edit(header, arrays):
        table = header
        for key in keys[:-1]:
            table = table[key]
        del table[keys[-1]]

    return edit


def _change(*keys, value):
    def edit(header, arrays):
        table = header
        for key in keys[:-1]:
            table = table[key]
        table[keys[-1]] = value

    return edit


def _got(value) -> str:
    return "got " + re.escape(repr(value))


STATE_CASES = [
    pytest.param(
        _e0(Cu=math.nan),
        r"'e0' must give a finite energy per species; got \{"
        r"'Au': [-+.e0-9]+, 'Cu': nan\}",
        id="e0-nan",
    ),
    pytest.param(
        _e0(Au=math.inf),
        r"'e0' must give a finite energy per species; got \{"
        r"'Au': inf",
        id="e0-inf",
    ),
    pytest.param(
        _e0(Au=None),
        r"'e0' must give a finite energy per species; got "
        r"\{'Cu': [-+.e0-9]+\}",
        id="e0-missing-species",
    ),
    pytest.param(_e0(Au="0.1"), r"'e0' must give a finite energy per species", id="e0-string"),
    pytest.param(setting("species", ["Cu"]), r"invalid species \['Cu'\]", id="species-subset"),
    pytest.param(
        setting("species", ["Au", "Cu"]), r"invalid species \['Au', 'Cu'\]", id="species-order"
    ),
    pytest.param(
        setting("species", ["Cu", "Ag"]), r"invalid species \['Cu', 'Ag'\]", id="species-other"
    ),
    pytest.param(
        setting("species", ["Cu", "Xx"]), r"invalid species \['Cu', 'Xx'\]", id="species-no-element"
    ),
    pytest.param(setting("species", "CuAu"), r"invalid species 'CuAu'", id="species-string"),
    *[
        pytest.param(
            setting("zeta", z),
            r"'zeta' must be an integer between 1 and 64; " + _got(z),
            id=f"zeta-{z!r}",
        )
        for z in ("4", 0, -2, True, 4.0, None)
    ],
    pytest.param(
        setting("variance", "foo"),
        r"'variance' must be 'dtc' or 'sor'; got 'foo'",
        id="variance-foo",
    ),
    pytest.param(
        setting("variance", "DTC"),
        r"'variance' must be 'dtc' or 'sor'; got 'DTC'",
        id="variance-case",
    ),
    *[
        pytest.param(
            setting("std_scale", v),
            re.escape("std_scale['energy'] must be ")
            + ("a number; " if isinstance(v, str) else "positive and finite; ")
            + _got(v),
            id=f"std_scale-{v!r}",
        )
        for v in (math.nan, math.inf, -0.5, "1")
    ],
    pytest.param(
        setting("std_scale", {"energy": 1.0, "forces": 2.0}),
        re.escape("'std_scale' must have the keys ['energy', 'forces', 'stress']"),
        id="std_scale-kinds",
    ),
    pytest.param(
        setting("calibration", {"n_folds": 5}),
        "'calibration' must be a small table with a 'method'",
        id="calibration-method",
    ),
    pytest.param(
        setting("jitter", -1e-8),
        r"'jitter' must be a number in \[0, 1\); got "
        r"-1e-08",
        id="jitter-negative",
    ),
    *[
        pytest.param(
            setting(key, math.nan),
            re.escape(f"{key!r} must be a finite number; ") + "got nan",
            id=f"{key}-nan",
        )
        for key in ("residual", "log_marginal_likelihood", "sum_log_sigma")
    ],
    pytest.param(
        _pop("model", "hyperparameters", "delta"),
        r"'hyperparameters' must hold a positive 'delta' per species",
        id="hyper-no-delta",
    ),
    pytest.param(
        _pop("model", "hyperparameters", "delta", "Au"),
        r"'hyperparameters' must hold a positive 'delta' per species",
        id="hyper-delta-species",
    ),
    pytest.param(
        setting("hyperparameters", [1.0]),
        r"'hyperparameters' must hold a positive 'delta' per species",
        id="hyper-list",
    ),
    pytest.param(
        _change("model", "hyperparameters", "delta", "Cu", value="big"),
        r"'hyperparameters' must hold a positive 'delta' per species .*'big'",
        id="hyper-delta-string",
    ),
    pytest.param(
        _change("model", "noise", "sigma_force", value=-0.1),
        r"invalid noise model \('sigma_force' must be a positive finite number",
        id="noise-negative",
    ),
    pytest.param(
        _change("model", "noise", "config_type_sigma", value={"hot": {"forse": 1}}),
        r"invalid noise model \('config_type_sigma'\['hot'\] must be a dict with keys",
        id="noise-config-type",
    ),
    pytest.param(
        _change("model", "noise", "sigma_forse", value=0.1),
        r"invalid noise model \(.*unexpected keyword argument 'sigma_forse'",
        id="noise-unknown-key",
    ),
    pytest.param(
        _change("model", "descriptor", "r_cut", value=-1),
        r"invalid descriptor settings \(SOAP: 'r_cut' must be a positive number",
        id="descriptor-r_cut",
    ),
    pytest.param(
        _change("model", "descriptor", "r_cutt", value=3.5),
        r"invalid descriptor settings \(.*unexpected keyword argument 'r_cutt'",
        id="descriptor-unknown-key",
    ),
    pytest.param(
        _change("model", "descriptor", "species", value=None),
        r"invalid descriptor settings \(SOAP: 'species' is not set",
        id="descriptor-no-species",
    ),
    pytest.param(
        setting("descriptor", [3.5, 3, 2]),
        r"invalid descriptor settings \(.*must be a mapping, not list\)",
        id="descriptor-list",
    ),
    pytest.param(
        setting("baseline", {"class": "LennardJones", "sigma": 1.0}),
        r"invalid baseline \(calculator_from_dict: 'class' must be one of "
        r"\['Coulomb', 'Ewald', 'PME'\]; got 'LennardJones'\.\)",
        id="baseline-unknown-class",
    ),
    pytest.param(
        setting("baseline", "Ewald"),
        r"invalid baseline \(calculator_from_dict: 'class' must be one of "
        r"\['Coulomb', 'Ewald', 'PME'\]; got 'str'\.\)",
        id="baseline-string",
    ),
    pytest.param(
        _change("model", "baseline", "pickle", value="cos\nsystem\n"),
        r"invalid baseline \(calculator_from_dict \(Ewald\): unknown key 'pickle'",
        id="baseline-unknown-key",
    ),
    pytest.param(
        _change("model", "baseline", "accuracy", value=-1.0),
        r"invalid baseline \(Ewald: 'accuracy'",
        id="baseline-bad-value",
    ),
    pytest.param(
        setting("n_data", "many"),
        r"'n_data' must be an integer >= 0; got 'many'",
        id="n_data-string",
    ),
    pytest.param(
        setting("n_observations", "energy"),
        r"inconsistent model state \(",
        id="n_observations-string",
    ),
]


@pytest.mark.parametrize("edit, match", STATE_CASES)
def test_invalid_model_state(tmp_path, saved, edit, match):
    path = craft(tmp_path, saved, edit)
    with refused(path, match + r".* \(damaged or not written by gapkit\)\.$"):
        load(path)


def test_required_keys_are_those_saved(saved):
    # "calibration" is optional: files written before it load as "unknown"
    assert set(saved[0]["model"]) == {*REQUIRED, "calibration"}


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_key_of_the_model_state(tmp_path, saved, key):
    path = craft(tmp_path, saved, _pop("model", key))
    with refused(path, re.escape(f"the model state has no {key!r} (damaged")):
        load(path)


def test_all_missing_keys_are_named(tmp_path, saved):
    def edit(header, arrays):
        for key in ("zeta", "variance"):
            del header["model"][key]

    path = craft(tmp_path, saved, edit)
    with refused(path, re.escape("the model state has no 'zeta', 'variance' (damaged")):
        load(path)


def _array(name, change):
    def edit(header, arrays):
        arrays[name] = change(arrays[name])

    return edit


def test_sparse_features_of_the_wrong_width(tmp_path, saved):
    m, width = saved[1]["sparse_features"].shape
    path = craft(tmp_path, saved, _array("sparse_features", lambda a: a[:, :-1].copy()))
    with refused(
        path,
        re.escape(
            f"sparse features of shape ({m}, {width - 1}) do not match "
            f"{m} weights and the descriptor's {width} features"
        ),
    ):
        load(path)


def test_sparse_features_of_the_wrong_length(tmp_path, saved):
    m, width = saved[1]["sparse_features"].shape
    path = craft(tmp_path, saved, _array("sparse_features", lambda a: a[:-1].copy()))
    with refused(
        path, re.escape(f"sparse features of shape ({m - 1}, {width}) do not match {m} weights")
    ):
        load(path)


def test_sparse_numbers_not_sorted(tmp_path, saved):
    z = saved[1]["sparse_numbers"]
    assert set(z.tolist()) == {29, 79}  # both species have sparse points
    path = craft(tmp_path, saved, _array("sparse_numbers", lambda a: a[::-1].copy()))
    with refused(path, re.escape("the sparse points are not ordered by species")):
        load(path)


@pytest.mark.parametrize(
    "change",
    [lambda a: np.full_like(a, 26), lambda a: a[:-1].copy()],
    ids=["other-species", "wrong-length"],
)
def test_sparse_numbers_that_do_not_match(tmp_path, saved, change):
    path = craft(tmp_path, saved, _array("sparse_numbers", change))
    with refused(path, re.escape("the sparse points' species do not match the descriptor")):
        load(path)


@pytest.mark.parametrize("name", ["delta", "qtb", "r_factor", "sparse_cholesky"])
def test_arrays_whose_shapes_disagree(tmp_path, saved, name):
    path = craft(tmp_path, saved, _array(name, lambda a: a[:-1].copy()))
    with refused(
        path,
        re.escape(
            "inconsistent model state (FittedGAP: the arrays' shapes do not agree with each other)"
        ),
    ):
        load(path)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", FLOAT_ARRAYS)
def test_array_with_nan_or_inf(tmp_path, saved, name, value):
    def change(a):
        a = a.copy()
        a.flat[a.size // 2] = value
        return a

    path = craft(tmp_path, saved, _array(name, change))
    with refused(path, re.escape(f"array {name!r} holds NaN or infinite values")):
        load(path)


@pytest.mark.parametrize("key", ["model", "params"])
@pytest.mark.parametrize("how", ["missing", "list"])
def test_header_without_model_or_params(tmp_path, saved, key, how):
    def edit(header, arrays):
        if how == "missing":
            del header[key]
        else:
            header[key] = list(header[key])

    path = craft(tmp_path, saved, edit)
    with refused(path, re.escape("the header has no 'model' and 'params' tables.") + "$"):
        load(path)


def test_unknown_constructor_parameter(tmp_path, saved):
    path = craft(tmp_path, saved, _change("params", "zetaa", value=4))
    with refused(
        path,
        r"invalid model parameters \(.*unexpected keyword argument "
        r"'zetaa'\)\.$",
    ):
        load(path)


def test_unchanged_state_loads(tmp_path, saved):
    """``craft`` itself breaks nothing: with no edit the file loads, bit for bit."""
    loaded = load(craft(tmp_path, saved, lambda header, arrays: None))
    for name in MODEL_ARRAYS:
        np.testing.assert_array_equal(getattr(loaded.fitted_, name), saved[1][name])
    assert type(loaded.baseline_) is Ewald


def test_structure_file_is_named_as_such(tmp_path, frames):
    path = tmp_path / "frames.xyz"
    write(path, frames[:2])
    with pytest.raises(
        ModelFileError,
        match="^"
        + re.escape(
            f"{str(path)!r} is not a gapkit model file: it looks like a text/structure file (.xyz)"
        ),
    ):
        load(path)


@pytest.mark.parametrize("what", ["state", "structure-file"])
def test_cli_reports_a_bad_model_in_one_line(tmp_path, saved, frames, capsys, what):
    test = tmp_path / "test.xyz"
    write(test, frames[:2])
    if what == "state":
        model = craft(tmp_path, saved, setting("zeta", "4"))
        message = (
            f"{model}: 'zeta' must be an integer between 1 and 64; got '4' (damaged "
            "or not written by gapkit)."
        )
    else:
        model = test
        message = (
            f"{str(model)!r} is not a gapkit model file: it looks like a text/structure "
            "file (.xyz); a model file is written by GAPRegressor.save / gapkit fit -o."
        )
    assert main(["eval", str(model), str(test)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"gapkit eval: error: {message}\n"
    assert "Traceback" not in captured.err + captured.out


# ------------------------------------------------- checks added after review


@pytest.mark.parametrize("key", ["sigma_energy", "sigma_force", "sigma_virial"])
def test_hyperparameters_without_a_sigma(tmp_path, saved, key):
    path = craft(tmp_path, saved, _pop("model", "hyperparameters", key))
    with refused(
        path,
        r"'hyperparameters' must hold a positive 'delta' per species and "
        r"the three sigmas",
    ):
        load(path)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("zeta", 65, "'zeta' must be an integer"),
        ("jitter", 1.5, "'jitter' must be"),
    ],
    ids=["zeta-65", "jitter-1.5"],
)
def test_values_beyond_what_fit_allows(tmp_path, saved, key, value, match):
    path = craft(tmp_path, saved, setting(key, value))
    with refused(path, match):
        load(path)


def test_invalid_stored_device(tmp_path, saved):
    path = craft(tmp_path, saved, _change("params", "device", value="tpu"))
    with refused(path, r"invalid model parameters \(GAPRegressor: 'device' must be one of"):
        load(path)
