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
    result = overture(
        "run", "overture/synth", "-i", "prompt=lofi hip hop in C minor", "-i", "duration=8", "-o", str(out)
    )
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


@pytest.mark.parametrize(
    ("options", "env", "config", "words"),
    [
        (["--workers", "threads"], {}, "", "Invalid value for '--workers'"),
        ([], {"OVERTURE_WORKERS": "threads"}, "", "Invalid value for '--workers' (env var: 'OVERTURE_WORKERS')"),
        ([], {}, 'workers = "threads"\n', "--config: workers must be process or inline, not 'threads'"),
        (["--cancel-grace", "0"], {}, "", "--cancel-grace: cancel_grace must be a number of seconds above 0, not 0.0"),
        ([], {"OVERTURE_CANCEL_GRACE": "-1"}, "", "--cancel-grace: cancel_grace must be a number of seconds above 0"),
        ([], {}, "cancel_grace = 0\n", "--config: cancel_grace must be a number of seconds above 0, not 0"),
    ],
)
def test_a_bad_workers_or_cancel_grace_stops_the_server(
    tmp_path: Path, options: list[str], env: dict[str, str], config: str, words: str
) -> None:
    config_file = tmp_path / "overture.toml"
    config_file.write_text(config)
    serve = ["serve", "--data-dir", str(tmp_path / "data"), "--config", str(config_file), *options]
    # Wide enough that rich does not wrap the message inside its error box.
    result = overture(*serve, env={"COLUMNS": "1000", **env})
    assert result.returncode == 2 and words in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("options", "env", "config", "expected"),
    [
        ([], {}, "", ("process", 10.0)),
        (["--workers", "inline", "--cancel-grace", "2.5"], {}, "", ("inline", 2.5)),
        ([], {"OVERTURE_WORKERS": "inline", "OVERTURE_CANCEL_GRACE": "3"}, "", ("inline", 3.0)),
        ([], {}, 'workers = "inline"\ncancel_grace = 4\n', ("inline", 4)),
        # The options win over the config file.
        (["--workers", "process", "--cancel-grace", "5"], {}, 'workers = "inline"\ncancel_grace = 4\n', ("process", 5)),
    ],
)
def test_workers_and_cancel_grace_reach_the_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    env: dict[str, str],
    config: str,
    expected: tuple[str, float],
) -> None:
    """From the option, its env var or the config file; the server itself is not started."""
    import uvicorn
    from typer.testing import CliRunner

    import overture.api.app
    from overture.cli import app
    from overture.config import Settings

    served: list[Settings] = []
    monkeypatch.setattr(overture.api.app, "create_app", served.append)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    for name in ("OVERTURE_WORKERS", "OVERTURE_CANCEL_GRACE", "OVERTURE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config_file = tmp_path / "overture.toml"
    config_file.write_text(config)
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--token", TOKEN, "--config", str(config_file), *options]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert (served[0].workers, served[0].cancel_grace_seconds) == expected


def test_a_server_starts_with_inline_workers_and_a_cancel_grace(tmp_path: Path) -> None:
    server = Server(tmp_path / "overture-data", "--workers", "inline", "--cancel-grace", "2.5").start()
    try:
        with server.http() as http:
            assert http.get("/health").status_code == 200
    finally:
        server.stop()
