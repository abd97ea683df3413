"""A real Overture server in a subprocess on a free loopback port, driven by the real client."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import replicate

TESTS_DIR = Path(__file__).parent
TOKEN = "r8_test_token_0123456789"
OTHER_TOKEN = "r8_other_token_9876543210"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        tokens: tuple[str, ...] = (TOKEN, OTHER_TOKEN),
        scheme: str = "http",
        verify: ssl.SSLContext | bool = True,
    ):
        self.data_dir = data_dir
        self.extra = list(extra)
        self.tokens = tokens
        self.port = free_port()
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = verify
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> Server:
        env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "OVERTURE_MODEL_MODULES": "overture_test_models"}
        for key in ("REPLICATE_API_TOKEN", "OVERTURE_API_TOKEN", "REPLICATE_BASE_URL"):
            env.pop(key, None)
        args = [sys.executable, "-m", "overture", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
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
    srv = Server(tmp_path_factory.mktemp("data") / "overture-data", "--page-size", "5").start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for tests that kill or restart it."""
    srv = Server(tmp_path / "overture-data")
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> replicate.Client:
    return server.client()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as c:
        yield c
