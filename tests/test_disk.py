"""A data directory that fills up or turns read-only: new predictions fail with a clear error,
the API keeps answering, and what was stored before is untouched.

The data directory lives on a small tmpfs of the test's own, filled up with a file. "Read-only" is a
read-only bind mount of its scratch and outputs directories: tests run as root, and root writes
through file modes, so ``chmod`` would prove nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from harness import Server, database_intact, query, require

pytestmark = pytest.mark.timeout(180)


def _mount_tmpfs(target: Path, options: str) -> str | None:
    """None once mounted; else why not."""
    try:
        mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]
        result = subprocess.run(mount, capture_output=True, text=True)
    except FileNotFoundError:
        return "mount(8) is not installed"
    return None if result.returncode == 0 else result.stderr.strip()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "disk"
    target.mkdir()
    refused = _mount_tmpfs(target, "size=48m")
    require(refused is None, f"mounting a tmpfs needs root with CAP_SYS_ADMIN and mount(8): {refused}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=True)


@contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """A read-only bind of the directory over itself: files the server opens from now on can't
    be written. (The whole tmpfs can't be remounted read-only while the database is open.)"""
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "ab") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


def _run(http: httpx.Client, seed: int) -> httpx.Response:
    return http.post(
        "/v1/models/overture/synth/predictions",
        json={"input": {"prompt": "techno", "duration": 3, "seed": seed}},
        headers={"Prefer": "wait=30"},
    )


def _clear_failure(response: httpx.Response) -> str:
    """The error a client sees: a refused create, or a failed prediction."""
    body = response.json()
    if response.status_code == 201:
        assert body["status"] == "failed", body
        return body["error"]
    assert response.status_code == 507, response.text
    return body["detail"]


def test_full_or_read_only_data_dir(small_disk: Path, tmp_path: Path) -> None:
    srv = Server(small_disk / "data", "--no-cache")
    srv.log_path = tmp_path / "server.log"
    srv.start()
    try:
        with srv.http() as http:
            first = _run(http, 1).json()
            assert first["status"] == "succeeded"
            stored = http.get(first["output"]).content
            digest = hashlib.sha256(stored).hexdigest()

            def still_answering() -> None:
                assert http.get(f"/v1/predictions/{first['id']}").json()["status"] == "succeeded"
                assert hashlib.sha256(http.get(first["output"]).content).hexdigest() == digest
                assert http.get("/v1/predictions").status_code == 200
                assert http.get("/v1/models").status_code == 200

            # Nearly full: the prediction is recorded, but its output can't be written.
            filler = _fill(small_disk)
            os.truncate(filler, filler.stat().st_size - (256 << 10))
            response = _run(http, 2)
            assert response.status_code == 201
            error = _clear_failure(response)
            assert "No space left on device" in error, error
            print(f"disk nearly full: {error}")
            # Full: not even the record fits.
            _fill(small_disk)
            for seed in (2, 3):
                error = _clear_failure(_run(http, seed))
                assert "No space left on device" in error or "full" in error, error
                print(f"disk full: {error}")
            still_answering()
            filler.unlink()
            assert _run(http, 4).json()["status"] == "succeeded"

            # The files a prediction writes; the database stays writable here (a database that
            # can't be written is the "full" case above: creates answer 507).
            with _read_only(srv.data_dir / "scratch"), _read_only(srv.data_dir / "outputs"):
                for seed in (5, 6):
                    error = _clear_failure(_run(http, seed))
                    assert "Read-only file system" in error, error
                    print(f"read-only: {error}")
                still_answering()
            assert _run(http, 7).json()["status"] == "succeeded"
            still_answering()
    finally:
        srv.stop()
    database_intact(srv.database_url)
    statuses = dict(query(srv.database_url, "SELECT status, count(*) FROM predictions GROUP BY status"))
    assert "starting" not in statuses and "processing" not in statuses, statuses
