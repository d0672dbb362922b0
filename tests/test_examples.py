"""The example scripts run as documented (so they cannot go stale)."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_fit_then_md_examples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / "01_fit_and_evaluate.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "force RMSE" in out and (tmp_path / "cu_emt.gap").exists()
    runpy.run_path(str(EXAMPLES / "02_md_with_calculator.py"), run_name="__main__")
    out = capsys.readouterr().out
    drift = float(out.split("changed by")[1].split()[0])
    assert abs(drift) < 0.5  # meV/atom over 200 fs
