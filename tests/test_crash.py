"""SIGKILL with work in flight (predictions, an upload, webhook retries), then a restart on the same
data directory: nothing lost, nothing stuck, nothing half-written, the database intact."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile

from conftest import Receiver, Server, wait_finished

pytestmark = pytest.mark.timeout(240)


def _integrity_ok(srv: Server) -> None:
    with sqlite3.connect(srv.data_dir / "overture.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _statuses(srv: Server) -> Counter[str]:
    with sqlite3.connect(srv.data_dir / "overture.db") as db:
        return Counter(status for (status,) in db.execute("SELECT status FROM predictions"))


def test_fifty_in_flight_then_sigkill(fresh_server: Server, receiver: Receiver) -> None:
    fresh_server.extra += ["--webhook-backoff-seconds", "0.5"]
    srv = fresh_server.start()
    receiver.fail_first = 2  # every webhook message is being retried when the kill comes
    ids: dict[str, str] = {}
    with srv.http() as http:
        for i in range(50):
            if i % 2:
                model, input = "tests/steps", {"steps": 10, "step_seconds": 0.05, "label": f"s{i}"}
            else:
                model, input = "overture/synth", {"prompt": "techno 128 bpm", "duration": 3, "seed": i}
            response = http.post(
                f"/v1/models/{model}/predictions",
                json={"input": input, "webhook": f"{receiver.url}/hook", "webhook_events_filter": ["completed"]},
            )
            assert response.status_code == 201, response.text
            ids[response.json()["id"]] = model
        # Kill once some have finished and some are running, with most still queued.
        deadline = time.monotonic() + 60
        while _statuses(srv)["succeeded"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    srv.kill()
    before = _statuses(srv)
    print(f"at the kill: {dict(before)}")
    assert before["processing"] >= 1 and before["starting"] >= 10
    _integrity_ok(srv)

    srv.start()
    with srv.http() as http:
        deadline = time.monotonic() + 150
        finished: dict[str, dict] = {}
        while len(finished) < len(ids):
            assert time.monotonic() < deadline, f"stuck: {set(ids) - set(finished)}"
            for pid in set(ids) - set(finished):
                body = http.get(f"/v1/predictions/{pid}").json()
                if body["status"] not in ("starting", "processing"):
                    finished[pid] = body
            time.sleep(0.2)
        listed = {p["id"] for p in _all_pages(http, "/v1/predictions")}
    assert listed == set(ids), "every prediction is still listed"
    for pid, body in finished.items():
        assert body["status"] == "succeeded", (pid, body["error"])
        if ids[pid] == "overture/synth":
            # Output files are whole: every frame is there and decodes.
            name = body["output"].rsplit("/", 1)[1]
            path = srv.data_dir / "outputs" / pid / name
            info = soundfile.info(str(path))
            assert abs(info.duration - 3.0) < 0.01
            assert len(soundfile.read(str(path))[0]) == info.frames
    # Nothing half-done is left in the outputs or the scratch area.
    assert not [p for p in (srv.data_dir / "outputs").rglob("*") if p.is_file() and p.parent.name not in ids]
    assert not list((srv.data_dir / "scratch").iterdir())
    _integrity_ok(srv)
    # Each prediction's completed webhook was delivered exactly once, retries and kill included.
    receiver.wait_for(lambda: len(receiver.delivered()) >= len(ids), timeout=60)
    time.sleep(1.5)
    delivered = Counter(json.loads(r["body"])["id"] for r in receiver.delivered())
    assert delivered == Counter(set(ids)), delivered


def _all_pages(http: httpx.Client, path: str) -> Iterator[dict]:
    while path:
        page = http.get(path).json()
        yield from page["results"]
        path = httpx.URL(page["next"]).raw_path.decode() if page["next"] else ""


def test_sigkill_while_an_output_file_is_half_written(fresh_server: Server, tmp_path: Path) -> None:
    """Output files reach the store whole or not at all: a model writes its output in the
    prediction's scratch directory and the store takes it whole, by rename, once the model returns.
    Killed halfway through the writing, the server leaves only scratch, which a restart clears
    before it runs the prediction again."""
    srv = fresh_server.start()
    content = os.urandom(8 << 20)
    gate = tmp_path / "gate"
    with srv.http() as http:
        upload = http.post("/v1/files", files={"content": ("source.bin", content)}).json()
        inputs = {"source": upload["urls"]["get"], "gate": str(gate)}
        created = http.post("/v1/models/tests/gated-copy/predictions", json={"input": inputs})
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
    # The model holds its output at half the bytes until the gate exists: kill it there.
    half_written = srv.data_dir / "scratch" / pid / "output.bin"
    deadline = time.monotonic() + 60
    while not (half_written.exists() and half_written.stat().st_size == len(content) // 2):
        assert time.monotonic() < deadline, "the model never got halfway"
        time.sleep(0.01)
    srv.kill()
    assert half_written.stat().st_size == len(content) // 2
    assert not (srv.data_dir / "outputs" / pid).exists()
    assert _statuses(srv) == Counter({"processing": 1})

    gate.touch()
    srv.start()
    with srv.http() as http:
        body = wait_finished(http, pid)
        assert body["status"] == "succeeded", body["error"]
        assert "Server restarted while this prediction ran; running it again." in body["logs"]
        assert body["output"].endswith(f"/{pid}/output.bin")
        assert hashlib.sha256(http.get(body["output"]).content).digest() == hashlib.sha256(content).digest()
    assert [p.name for p in (srv.data_dir / "outputs" / pid).iterdir()] == ["output.bin"]
    assert not list((srv.data_dir / "scratch").iterdir())
    _integrity_ok(srv)


def test_sigkill_while_an_upload_arrives(fresh_server: Server) -> None:
    """An upload is received whole before the store copies it: one cut short by a kill is not kept."""
    srv = fresh_server.start()
    kept = b"kept file " * 1000
    with srv.http() as http:
        kept_id = http.post("/v1/files", files={"content": ("kept.bin", kept)}).json()["id"]
    sent = 0
    half_sent = False

    def slow_body() -> Iterator[bytes]:
        nonlocal sent, half_sent
        yield b'--B\r\nContent-Disposition: form-data; name="content"; filename="big.bin"\r\n\r\n'
        for _ in range(64):
            sent += 1
            if sent == 32:
                half_sent = True
            yield b"x" * 65536
            time.sleep(0.02)

    def upload() -> None:
        try:
            with srv.http() as http:
                http.post("/v1/files", content=slow_body(), headers={"content-type": "multipart/form-data; boundary=B"})
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=upload)
    thread.start()
    while not half_sent:
        time.sleep(0.01)
    srv.kill()
    thread.join(10)

    srv.start()
    with srv.http() as http:
        listed = http.get("/v1/files").json()["results"]
        assert [f["id"] for f in listed] == [kept_id]
        download = http.get(f"/v1/files/{kept_id}/download").content
        assert hashlib.sha256(download).hexdigest() == listed[0]["checksums"]["sha256"]
    assert sorted(p.name for p in (srv.data_dir / "files").iterdir()) == [kept_id]
    _integrity_ok(srv)
