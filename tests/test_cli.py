"""The ``overture`` command, run as a user would from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from harness import SUBPROCESS_PYTHONPATH, TOKEN, Server

pytestmark = pytest.mark.timeout(120)


def overture(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "OVERTURE_"))}
    base_env["PYTHONPATH"] = SUBPROCESS_PYTHONPATH
    return subprocess.run(
        [sys.executable, "-m", "overture", *args], capture_output=True, text=True, env={**base_env, **(env or {})}
    )


def test_run_in_process_writes_the_audio(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    result = overture("run", "overture/synth", "-i", "prompt=lofi hip hop in C minor", "-i", "duration=8", "-o", str(out))
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(out)
    assert rate == 44100 and audio.shape == (8 * 44100, 2)


def test_run_in_process_reports_invalid_input(tmp_path: Path) -> None:
    result = overture("run", "overture/synth", "-i", "duration=9999")
    assert result.returncode == 2 and "input.duration" in result.stderr


def test_run_against_a_server_and_inspect_predictions(server: Server, tmp_path: Path) -> None:
    env = {"REPLICATE_BASE_URL": server.base_url, "REPLICATE_API_TOKEN": TOKEN}
    out = tmp_path / "remote.mp3"
    result = overture("run", "overture/synth", "-i", "duration=2", "-i", "output_format=mp3", "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1000

    listed = overture("predictions", "list", "--limit", "3", env=env)
    assert listed.returncode == 0 and "overture/synth" in listed.stdout
    newest = server.client().predictions.list().results[0]
    shown = overture("predictions", "get", newest.id, env=env)
    assert json.loads(shown.stdout)["id"] == newest.id

    running = server.client().predictions.create(model="tests/steps", input={"steps": 500, "step_seconds": 0.05})
    canceled = overture("predictions", "cancel", running.id, env=env)
    assert canceled.stdout.strip() == f"{running.id}: canceled"


def test_models_lists_the_built_in_model() -> None:
    result = overture("models")
    assert result.returncode == 0 and "overture/synth" in result.stdout
