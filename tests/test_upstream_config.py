"""Upstreams and routes as an operator configures them: options, env variables and the config
file; a mistake stops the server at start-up with exit status 2, naming the option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import SUBPROCESS_PYTHONPATH, TOKEN
from overture.upstreams import Route, Upstream

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("options", "config", "words"),
    [
        (["--upstream", "a"], "", "Invalid value for --upstream: expected NAME=URL, got 'a'"),
        (["--upstream", "a=ftp://x"], "", "Invalid value for --upstream: a: expected an http(s) URL"),
        (["--route", "meta/musicgen=upstream:nope"], "", "Invalid value for --route: meta/musicgen: 'upstream:nope'"),
        (["--upstream", "a=http://x", "--route", "meta/musicgen=elsewhere"], "", "expected local, upstream:NAME"),
        (["--upstream-token", "b=secret-token"], "", "Invalid value for --upstream-token: b: no upstream"),
        (["--upstream", "a=http://x", "--burst-after", "0"], "", "burst_after must be a number of seconds above 0"),
        ([], '[routes]\n"meta/musicgen" = "burst:a"\n', "--config: meta/musicgen: 'burst:a' names no configured"),
        ([], "[upstreams]\na = 'http://x'\n", "--config: upstreams.a must be a table such as"),
    ],
)
def test_a_bad_upstream_or_route_stops_the_server(tmp_path: Path, options: list[str], config: str, words: str) -> None:
    config_file = tmp_path / "overture.toml"
    config_file.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "OVERTURE_"))}
    # Wide enough that rich does not wrap the message inside its error box.
    env |= {"PYTHONPATH": SUBPROCESS_PYTHONPATH, "COLUMNS": "1000"}
    serve = [sys.executable, "-m", "overture", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]
    result = subprocess.run(
        [*serve, "--config", str(config_file), *options], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert "secret-token" not in result.stderr


def test_upstreams_and_routes_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Options over the config file; a token from the config, an option or its env variable."""
    import uvicorn
    from typer.testing import CliRunner

    import overture.api.app
    from overture.cli import app
    from overture.config import Settings

    served: list[Settings] = []
    monkeypatch.setattr(overture.api.app, "create_app", served.append)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    for name in [name for name in os.environ if name.startswith("OVERTURE_")]:
        monkeypatch.delenv(name)
    config_file = tmp_path / "overture.toml"
    config_file.write_text(
        'burst_after = 12\n[upstreams.replicate]\nurl = "https://api.replicate.com"\ntoken = "r8_from_the_file"\n'
        '[upstreams.colleague]\nurl = "http://gpu-box:8000/"\n'
        '[routes]\n"meta/musicgen" = "burst:colleague"\n"riffusion/riffusion" = "upstream:replicate"\n'
    )
    options = ["--route", "meta/musicgen:melody=upstream:replicate", "--upstream-timeout", "9"]
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--token", TOKEN, "--config", str(config_file), *options]
    result = CliRunner().invoke(app, args, env={"OVERTURE_UPSTREAM_TOKEN_COLLEAGUE": "from-the-env"})
    assert result.exit_code == 0, result.output
    settings = served[0]
    assert settings.upstreams == {
        "replicate": Upstream("replicate", "https://api.replicate.com", "r8_from_the_file"),
        "colleague": Upstream("colleague", "http://gpu-box:8000", "from-the-env"),
    }
    assert settings.routes == {
        "meta/musicgen": Route("burst", "colleague"),
        "riffusion/riffusion": Route("upstream", "replicate"),
        "meta/musicgen:melody": Route("upstream", "replicate"),
    }
    assert (settings.burst_after_seconds, settings.upstream_timeout_seconds) == (12, 9)
    assert "r8_from_the_file" not in repr(settings)  # what a log line of the settings would show
