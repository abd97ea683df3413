"""What several test modules share: a real server in a subprocess, a webhook receiver, and
stand-ins for the engine when a model runs in the test's own process.

A plain module, not a test module or conftest: tests import from here, and conftest.py builds its
fixtures on it. torch is imported only by the helpers that run a model.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import replicate
import sqlalchemy

from overture.models.base import Canceled, Version
from overture.models.musicgen.request import Sampling
from overture.status import TERMINAL
from overture.store.store import default_database_url

if TYPE_CHECKING:
    from overture.models.musicgen.batching import Generation
    from overture.models.musicgen.checkpoint import MusicgenCheckpoint

TESTS_DIR = Path(__file__).parent
#: For a subprocess running ``python -m overture``: the test models, and this checkout's own
#: sources ahead of the installed ones, so that a second worktree's tests run its code.
SUBPROCESS_PYTHONPATH = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent / "src")])
TOKEN = "r8_test_token_0123456789"
#: Server options for tests that send one token's requests faster than Replicate's limits allow
#: (fuzzers): they test something else, and the limits' own tests are in test_fair_use.py.
UNLIMITED = ("--rate-limit-creates", "0", "--rate-limit-requests", "0")
OTHER_TOKEN = "r8_other_token_9876543210"

# -- the database under test ------------------------------------------------------------------

#: A PostgreSQL cluster (``postgresql+psycopg://.../postgres``, as ``.ci/postgres`` sets it): when
#: set, each server and store of the tests gets a database of its own there instead of SQLite.
POSTGRES_URL = os.environ.get("OVERTURE_TEST_DATABASE_URL")
_created: list[str] = []


def fresh_database_url(data_dir: Path) -> str:
    """A new, empty database: on the ``OVERTURE_TEST_DATABASE_URL`` cluster when set, else a SQLite
    file in ``data_dir``, where the server would put it. Dropped by ``drop_test_databases``."""
    if POSTGRES_URL is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return default_database_url(data_dir)
    name = f"overture_test_{uuid.uuid4().hex[:12]}"
    with _cluster() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    _created.append(name)
    return sqlalchemy.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_test_databases() -> None:
    """Drop what ``fresh_database_url`` created (the end of the test session)."""
    if POSTGRES_URL is None:
        return
    with _cluster() as conn:
        while _created:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{_created.pop()}" WITH (FORCE)'))


def _cluster() -> sqlalchemy.Connection:
    assert POSTGRES_URL is not None
    return sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool).connect()


def query(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    """Rows of one SQL statement, as a test reads what a server left in its database."""
    engine = sqlalchemy.create_engine(database_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sqlalchemy.text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def database_intact(database_url: str) -> None:
    """SQLite's integrity check of the whole file; on PostgreSQL, whose server no test kills, that
    every table still reads."""
    if database_url.startswith("sqlite"):
        assert query(database_url, "PRAGMA integrity_check") == [("ok",)]
        return
    for table in ("predictions", "files", "events", "webhook_deliveries", "alembic_version"):
        query(database_url, f"SELECT count(*) FROM {table}")


# -- a server in a subprocess ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(condition: bool, why: str) -> None:
    """Skip the calling test when what it needs is missing, except in CI (``CI`` set, as CI services
    set it): there a part of the suite that cannot run must fail, saying what is missing, and not
    pass as a skip."""
    if condition:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"missing in CI: {why}", pytrace=False)
    pytest.skip(why)


def npm_installed(directory: Path) -> str:
    """node, with ``directory``'s packages installed by ``npm ci`` from its committed lock. The test
    installs them, not ``make install``: Python work needs no node, and a checkout whose lock changed
    since the last install gets the new one before it runs."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node is not None and npm is not None, "node and npm (apt-get install nodejs npm)")
    assert node is not None and npm is not None
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (directory / "package-lock.json").stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=directory, check=True, timeout=300)
    return node


class Server:
    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        tokens: tuple[str, ...] = (TOKEN, OTHER_TOKEN),
        scheme: str = "http",
        verify: ssl.SSLContext | bool = True,
        launcher: tuple[str, ...] = (),
    ):
        self.data_dir = data_dir
        #: A command that runs the server command it is given (e.g. in a namespace of its own).
        self.launcher = list(launcher)
        self.extra = list(extra)
        self.tokens = tokens
        self.port = free_port()
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = verify
        self.process: subprocess.Popen[bytes] | None = None
        if "--database-url" not in self.extra and POSTGRES_URL is not None:
            self.extra += ["--database-url", fresh_database_url(data_dir)]
        #: Where its records are, for tests that read them directly (``query``).
        self.database_url = (
            self.extra[self.extra.index("--database-url") + 1]
            if "--database-url" in self.extra
            else default_database_url(data_dir)
        )
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> Server:
        env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "OVERTURE_MODEL_MODULES": "overture_test_models"}
        for key in ("REPLICATE_API_TOKEN", "OVERTURE_API_TOKEN", "REPLICATE_BASE_URL"):
            env.pop(key, None)
        args = [*self.launcher, sys.executable, "-m", "overture", "serve", "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir)]
        for token in self.tokens:
            args += ["--token", token]
        self.process = subprocess.Popen(
            args + self.extra, env=env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str = TOKEN) -> replicate.Client:
        client = replicate.Client(api_token=token, base_url=self.base_url)
        client.poll_interval = 0.05
        return client

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, verify=self.verify)


def wait_finished(http: httpx.Client, pid: str, timeout: float = 30) -> dict:
    """Poll a prediction over raw HTTP until it ends; its final JSON."""
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/v1/predictions/{pid}").json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


class Receiver:
    """A real webhook receiver on loopback that records every request.

    ``fail_first`` answers that many attempts of each event with ``fail_status``; ``/hang`` paths
    never answer in time.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.fail_first = 0
        self.fail_status = 503
        self.retry_after: str | None = None
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path.startswith("/hang"):
                    time.sleep(30)
                    return
                with receiver._lock:
                    msg = self.headers.get("webhook-id", "")
                    receiver._attempts[msg] = receiver._attempts.get(msg, 0) + 1
                    failing = receiver._attempts[msg] <= receiver.fail_first
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body.decode(),
                            "status": receiver.fail_status if failing else 200,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(receiver.fail_status if failing else 200)
                if failing and receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def delivered(self, path: str = "/hook") -> list[dict[str, object]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path and r["status"] == 200]

    def wait_for(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.requests}")
            time.sleep(0.05)


# -- models in this process -----------------------------------------------------------------


class RecordingContext:
    """A ``Context`` that keeps what the model reports, and cancels itself after ``cancel_after``
    cancel checks when asked to."""

    streaming = False

    def __init__(self, scratch: Path, cancel_after: int | None = None):
        scratch.mkdir(parents=True, exist_ok=True)
        self.prediction_id = scratch.name
        self.scratch = scratch
        self.cancel_after = cancel_after
        self.checks = 0
        self.logs: list[str] = []
        self.progress_reports: list[tuple[int, int]] = []

    def log(self, message: str) -> None:
        self.logs.append(message)

    def progress(self, done: int, total: int) -> None:
        self.progress_reports.append((done, total))

    def check_canceled(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise Canceled()

    def scratch_path(self, filename: str) -> Path:
        return self.scratch / filename

    def partial(self, value: Any) -> None:
        pass

    def seed(self) -> int:
        return int(next(line for line in self.logs if line.startswith("Using seed: ")).split(": ")[1])


def inputs_for(version: Version, **inputs: Any) -> dict[str, Any]:
    """Inputs as the engine hands them over: schema defaults applied, files as local paths."""
    audio = inputs.pop("input_audio", None)
    values = version.inputs.validate(inputs)
    values["input_audio"] = audio
    return values


#: MusicGen batch rows: greedy and sampled settings, and the prompts ``generation`` cycles through.
GREEDY = Sampling(top_k=250, top_p=0.0, temperature=0.0, guidance=3.0)
SAMPLED = Sampling(top_k=250, top_p=0.0, temperature=1.0, guidance=3.0)
PROMPTS = ["lofi hip hop beat", "epic orchestral with choir", "jazz", "80s synth pop track with drums", "rock"]


class Watch:
    """Counts steps and cancels itself after ``cancel_after`` of them when asked to."""

    def __init__(self, cancel_after: int | None = None):
        self.cancel_after = cancel_after
        self.steps = 0
        self.reports: list[tuple[int, int]] = []

    def progress(self, done: int, total: int) -> None:
        self.reports.append((done, total))

    def check_canceled(self) -> None:
        self.steps += 1
        if self.cancel_after is not None and self.steps > self.cancel_after:
            raise Canceled()


def generation(
    checkpoint: MusicgenCheckpoint, index: int, frames: int, sampling: Sampling = GREEDY, **extra: Any
) -> Generation:
    """One of ``PROMPTS`` as a batch row, with a random stream of its own."""
    # Here, so that the tests without models start without torch.
    import torch

    from overture.models.musicgen.batching import Generation

    return Generation(
        text=checkpoint.encode_text(PROMPTS[index % len(PROMPTS)]),
        sampling=sampling,
        generator=torch.Generator().manual_seed(1000 + index),
        watcher=extra.pop("watcher", Watch()),
        frames=frames,
        **extra,
    )
