"""The short version of ``benchmarks/load.py``: 200 synth predictions from 20 concurrent clients,
mixing Prefer-wait, polling and cancels, with no error and no prediction lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_two_hundred_predictions_from_twenty_clients(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "load.py"), "--predictions", "200", "--clients", "20", "--json", str(out)],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)
    result = json.loads(out.read_text())
    assert result["predictions"] == 200 and result["listed"] == 200
    assert result["errors"] == [] and result["problems"] == []
    assert result["routes"]["POST /v1/predictions/{id}/cancel"]["count"] == 40
