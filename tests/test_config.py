"""Model configs: reading JSON/TOML files and building a GAPRegressor from them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from gapkit.config import build_model, read_config
from gapkit.exceptions import InvalidParameterError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def test_read_config_json_and_toml(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"n_sparse": 50, "descriptor": {"r_cut": 4.0}}))
    (tmp_path / "m.toml").write_text("n_sparse = 50\n[descriptor]\nr_cut = 4.0\n")
    expected = {"n_sparse": 50, "descriptor": {"r_cut": 4.0}}
    assert read_config(tmp_path / "m.json") == expected
    assert read_config(tmp_path / "m.toml") == expected
    assert read_config(None) == {}


def test_invalid_toml_names_the_file_and_the_parsers_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("n_sparse = \n")
    with pytest.raises(tomllib.TOMLDecodeError) as parser:
        tomllib.loads(path.read_text())
    with pytest.raises(
        InvalidParameterError,
        match=re.escape(f"config {str(path)!r}: not valid TOML ({parser.value})"),
    ):
        read_config(path)


def test_invalid_json_names_the_file_and_the_parsers_message(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"n_sparse": ')
    with pytest.raises(json.JSONDecodeError) as parser:
        json.loads(path.read_text())
    with pytest.raises(
        InvalidParameterError,
        match=re.escape(f"config {str(path)!r}: not valid JSON ({parser.value})"),
    ):
        read_config(path)


def test_binary_or_non_table_config_is_refused(tmp_path):
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InvalidParameterError, match="bin.json' is not a text file"):
        read_config(tmp_path / "bin.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidParameterError, match="expected a table of parameters"):
        read_config(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError, match="no config file at .*absent.json"):
        read_config(tmp_path / "absent.json")


def test_toml_on_python_310_uses_tomli(tmp_path, monkeypatch):
    path = tmp_path / "m.toml"
    path.write_text("n_sparse = 7\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # tomli has the same interface
    assert read_config(path) == {"n_sparse": 7}
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(InvalidParameterError, match="need the tomli package"):
        read_config(path)


def test_descriptor_must_be_a_table():
    message = (
        "config: 'descriptor' must be a table of SOAP parameters, e.g. "
        "{\"r_cut\": 5.0}; got 'soap'."
    )
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        build_model({"descriptor": "soap"})


def test_unknown_keys_are_rejected():
    with pytest.raises(InvalidParameterError, match="unknown parameter\\(s\\) n_sparce; allowed"):
        build_model({"n_sparce": 3})
    with pytest.raises(
        InvalidParameterError, match="unknown descriptor parameter\\(s\\) cutoff; allowed"
    ):
        build_model({"descriptor": {"cutoff": 5}})


@pytest.mark.parametrize("baseline", ["pme", ["PME"], {"charges": {"Na": 1.0, "Cl": -1.0}}])
def test_baseline_must_be_a_table_with_a_class(baseline):
    with pytest.raises(
        InvalidParameterError,
        match="'baseline' must be a table with a 'class' \\(Coulomb, Ewald or PME",
    ):
        build_model({"baseline": baseline})


def test_baseline_table_is_passed_to_calculator_from_dict():
    from gapkit.electrostatics import Ewald

    config = {"baseline": {"class": "Ewald", "charges": {"Na": 1.0, "Cl": -1.0}}}
    model = build_model(config)
    assert isinstance(model.baseline, Ewald)
    assert config == {"baseline": {"class": "Ewald", "charges": {"Na": 1.0, "Cl": -1.0}}}


def test_overrides_and_config_left_unchanged():
    config = {"descriptor": {"r_cut": 4.0}, "n_sparse": 50, "random_state": 1}
    model = build_model(config, random_state=5, n_jobs=None)
    assert (model.n_sparse, model.random_state, model.descriptor.r_cut) == (50, 5, 4.0)
    assert config == {"descriptor": {"r_cut": 4.0}, "n_sparse": 50, "random_state": 1}


def test_config_imports_neither_the_cli_nor_active_learning():
    """gapkit.config sits below both; the runner builds models without the CLI."""
    code = """
import sys
from gapkit.config import build_model
build_model({"n_sparse": 5})
assert not [m for m in sys.modules if m == "gapkit.cli" or m.startswith("gapkit.active")]
from gapkit.active.runner import run_learning
try:
    run_learning({"mode": "swim"})
except ValueError:
    pass
assert "gapkit.cli" not in sys.modules, "the runner imports the CLI"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
