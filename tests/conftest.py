"""A real Overture server in a subprocess on a free loopback port, driven by the real client."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import replicate

TESTS_DIR = Path(__file__).parent
# Nothing may be fetched from the Hugging Face hub here: checkpoints are tiny ones the tests build.
os.environ["HF_HUB_OFFLINE"] = "1"
TOKEN = "r8_test_token_0123456789"
OTHER_TOKEN = "r8_other_token_9876543210"


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
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> Server:
        # The checkout's own sources first, so that a second worktree's tests run its code.
        pythonpath = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent / "src")])
        env = {**os.environ, "PYTHONPATH": pythonpath, "OVERTURE_MODEL_MODULES": "overture_test_models"}
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("data") / "overture-data", "--page-size", "5", "--webhook-backoff-seconds", "0.1"
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for tests that kill or restart it."""
    srv = Server(tmp_path / "overture-data")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch in this process, and any server started meanwhile, on one thread: tiny models gain
    nothing from a second one, and on a busy 2-core machine OpenMP threads waiting for each other
    make a step ten times slower. Modules that run models ask for it with ``usefixtures``."""
    import torch  # here, so that the tests without models start without it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def client(server: Server) -> replicate.Client:
    return server.client()


@pytest.fixture
def env(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module-level ``replicate`` API configured by environment only, as the seed's reader does.

    ``replicate.run`` and friends are bound to the import-time default client, which builds its
    HTTP clients (base URL and token from the environment) on first use: drop any built for
    another test's server.
    """
    monkeypatch.setenv("REPLICATE_BASE_URL", server.base_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setattr(replicate.default_client, "_Client__client", None)
    monkeypatch.setattr(replicate.default_client, "_Client__async_client", None)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as c:
        yield c


def wait_finished(http: httpx.Client, pid: str, timeout: float = 30) -> dict:
    """Poll a prediction over raw HTTP until it ends; its final JSON."""
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/v1/predictions/{pid}").json()
        if body["status"] in ("succeeded", "failed", "canceled"):
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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()
