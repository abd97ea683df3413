"""Hostile input, the classic attacks one by one: nesting, bad encodings, huge data: URIs, fake
audio, endless downloads, traversal. Schemathesis over every route is in test_fuzz_api.py."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness import Server, wait_finished

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small limits, so that going past them is cheap."""
    srv = Server(
        tmp_path_factory.mktemp("hostile") / "data",
        "--max-request-bytes",
        str(4 << 20),
        "--max-input-file-bytes",
        str(1 << 20),
        "--input-download-timeout",
        "3",
        "--prediction-timeout",
        "20",
    ).start()
    yield srv
    srv.stop()


def _problem(response: httpx.Response, *statuses: int) -> str:
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()["detail"]


def test_deeply_nested_json_is_refused(limited: Server) -> None:
    nested = '{"input": {"label": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    with limited.http() as http:
        response = http.post(
            "/v1/models/tests/steps/predictions", content=nested, headers={"content-type": "application/json"}
        )
        _problem(response, 400, 422)
        assert http.get("/health").status_code == 200


def test_invalid_utf8_is_refused(limited: Server) -> None:
    with limited.http() as http:
        response = http.post(
            "/v1/models/tests/steps/predictions",
            content=b'{"input": {"label": "\xff\xfe"}}',
            headers={"content-type": "application/json"},
        )
        _problem(response, 400, 422)


def test_data_uri_of_hundreds_of_megabytes_is_413(limited: Server) -> None:
    # 300 MB, streamed, never held by the server: refused on its Content-Length.
    size = 300 << 20
    head = b'{"input": {"audio": "data:audio/wav;base64,'
    tail = b'"}}'

    def body() -> Iterator[bytes]:
        yield head
        chunk = b"A" * (1 << 20)
        for _ in range(size >> 20):
            yield chunk
        yield tail

    with limited.http() as http:
        response = http.post(
            "/v1/models/tests/file-echo/predictions",
            content=body(),
            headers={"content-type": "application/json", "content-length": str(len(head) + size + len(tail))},
        )
        assert "larger than this server's limit" in _problem(response, 413)


def test_data_uri_over_the_file_limit_is_422_at_create(limited: Server) -> None:
    uri = "data:audio/wav;base64," + base64.b64encode(b"\0" * (2 << 20)).decode()
    with limited.http() as http:
        response = http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": uri}})
        assert "input.audio: data: URI is larger than the 1048576 byte limit" in _problem(response, 422)


def test_audio_input_that_is_not_audio_fails_readably(limited: Server) -> None:
    uri = "data:audio/wav;base64," + base64.b64encode(b"RIFF....WAVEthis is not audio" * 10).decode()
    with limited.http() as http:
        pid = http.post("/v1/models/tests/audio-length/predictions", json={"input": {"audio": uri}}).json()["id"]
        body = wait_finished(http, pid)
        assert body["status"] == "failed" and "is not a readable audio file" in body["error"]


class _Hostile(BaseHTTPRequestHandler):
    """``/loop`` redirects to itself forever, ``/endless`` streams bytes forever, ``/trickle`` too
    but one byte at a time, slowly."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        if self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.end_headers()
        try:
            while True:
                if self.path.startswith("/trickle"):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
                else:
                    self.wfile.write(b"\0" * 65536)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/loop.wav", "redirects"),
        ("/endless.wav", "larger than the 1048576 byte limit"),
        ("/trickle.wav", "within 3 s"),
    ],
)
def test_hostile_input_url_fails_only_its_prediction(limited: Server, hostile_url: str, path: str, words: str) -> None:
    with limited.http() as http:
        started = time.monotonic()
        pid = http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": hostile_url + path}}).json()[
            "id"
        ]
        body = wait_finished(http, pid)
        assert body["status"] == "failed" and words in body["error"], body["error"]
        assert time.monotonic() - started < 15
        assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/outputs/../overture.db",
        "/v1/outputs/..%2Foverture.db/x",
        "/v1/outputs/%2e%2e/overture.db",
        "/v1/outputs/x/..%2F..%2Foverture.db",
        "/v1/outputs/%2E%2E/signing.key",
        "/v1/outputs/..%5C../overture.db",
        "/v1/files/..%2Foverture.db/download",
        "/v1/files/%2e%2e%2fsigning.key/download",
        "/v1/files/..",
        "/v1/files/../api-token",
        "/signed/outputs/%2e%2e/signing.key?expires=99999999999&signature=00",
    ],
)
def test_path_traversal_reaches_nothing(limited: Server, path: str) -> None:
    with limited.http() as http:
        # Sent as written: no client-side normalization of dot segments.
        response = http.send(http.build_request("GET", limited.base_url + path))
        assert response.status_code in (403, 404), (path, response.status_code, response.text[:200])
        assert response.headers["content-type"].startswith("application/problem+json")
        for secret in (b"SQLite format", (limited.data_dir / "signing.key").read_bytes().strip()):
            assert secret not in response.content


@pytest.mark.parametrize(
    "path",
    [
        "/v1/predictions/doesnotexist",
        "/v1/predictions/doesnotexist/stream",
        "/v1/files/doesnotexist",
        "/v1/files/doesnotexist/download",
        "/v1/outputs/doesnotexist/out.wav",
        "/v1/models/nobody/nothing",
        "/v1/models/overture/synth/versions/0000",
    ],
)
def test_ids_that_do_not_exist_are_404(limited: Server, path: str) -> None:
    with limited.http() as http:
        _problem(http.get(path), 404)
        _problem(http.post("/v1/predictions/doesnotexist/cancel"), 404)
        _problem(http.delete("/v1/files/doesnotexist"), 404)
