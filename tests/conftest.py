"""Fixtures: a real Overture server in a subprocess on a free loopback port, driven by the real
client, and a webhook receiver. What they are built on lives in harness.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import replicate

from harness import TOKEN, Receiver, Server, drop_test_databases, fresh_database_url

# Nothing may be fetched from the Hugging Face hub here: checkpoints are tiny ones the tests build.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _test_databases() -> Iterator[None]:
    """Under ``OVERTURE_TEST_DATABASE_URL``, the databases the session made are dropped at its end."""
    yield
    drop_test_databases()


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Kernel choices the tests' models measure go to a cache of the session's own (servers
    inherit it), never to the user's ``~/.cache/overture/kernels``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OVERTURE_KERNEL_CACHE", str(tmp_path_factory.mktemp("kernel-cache")))
        yield


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """An empty database for a store in the test's own process: see harness.fresh_database_url."""
    return fresh_database_url(tmp_path / "overture-data")


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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()
