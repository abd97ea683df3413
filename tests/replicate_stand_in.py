"""api.replicate.com on loopback, answering with the real response shapes in
``tests/fixtures/replicate/`` (taken from the ``replicate`` client's recorded exchanges), for the
one case where nothing real can run here: B relaying to Replicate itself.

Two servers: the API, and a separate delivery host serving the output files, as
``replicate.delivery`` does. ``urls.stream`` names a third host (``localhost``, not 127.0.0.1).
The API can be told to answer creates with 500s or 429s first, what a finished prediction
looks like (``succeeded``, ``failed``, or ``removed``: its data gone, as after an hour on
Replicate), to answer creates finished (``Prefer: wait``), with which output URLs, and to page its
prediction list onto another host. The delivery host redirects ``/redirect/<URL>`` to the URL.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "replicate"
#: What each output file of a finished prediction holds: a WAV header and some samples.
OUTPUT_BYTES = b"RIFF" + bytes(range(256)) * 64


def fixture(name: str, **values: str) -> dict[str, Any]:
    """A response shape with its placeholders filled and its ``_source`` note dropped."""
    text = (FIXTURES / f"{name}.json").read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    body = json.loads(text)
    body.pop("_source", None)
    return body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class StandIn:
    #: Creates answered with 500 before one is accepted.
    fail_creates: int = 0
    #: Creates answered with 429 and ``Retry-After: 1`` before one is accepted.
    throttle_creates: int = 0
    #: How a finished prediction looks: "succeeded", "failed" or "removed".
    outcome: str = "succeeded"
    #: Creates answered already finished, as ``Prefer: wait`` does for a short prediction.
    finish_at_create: bool = False
    #: The output URLs of a succeeded prediction, instead of the delivery host's files.
    outputs: list[str] | None = None
    #: The prediction list's ``next`` link.
    list_next: str | None = None
    #: More metrics of a succeeded prediction, as Replicate reports for some models.
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The webhook signing secret it gives.
    secret: str = "whsec_c2VjcmV0LW9mLXRoZS1zdGFuZC1pbg=="
    requests: list[Seen] = field(default_factory=list)
    deliveries: list[Seen] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    _gets: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> StandIn:
        self.api = _serve(self._api_handler())
        self.delivery = _serve(self._delivery_handler())
        self.url = f"http://127.0.0.1:{self.api.server_address[1]}"
        self.delivery_url = f"http://127.0.0.1:{self.delivery.server_address[1]}"
        self.stream_url = f"http://localhost:{self.api.server_address[1]}"
        return self

    def stop(self) -> None:
        for server in (self.api, self.delivery):
            server.shutdown()
            server.server_close()

    def shape(self, name: str, pid: str) -> dict[str, Any]:
        if name == "failed":  # Replicate's failed prediction: the succeeded shape, its error, no output
            error = "CUDA out of memory. Tried to allocate 2.00 GiB"
            return self.shape("succeeded", pid) | {"status": "failed", "error": error, "output": None}
        shape = fixture(name, id=pid, api=self.url, stream=self.stream_url, delivery=self.delivery_url)
        if name == "succeeded":
            shape["metrics"] |= self.metrics
            shape["output"] = shape["output"] if self.outputs is None else self.outputs
        return shape

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            if method == "POST" and re.fullmatch(r"/v1/(models/[^/]+/[^/]+/)?predictions", path):
                if self.fail_creates > 0:
                    self.fail_creates -= 1
                    return 500, {}, {"detail": "Internal server error"}
                if self.throttle_creates > 0:
                    self.throttle_creates -= 1
                    return 429, {"Retry-After": "1"}, fixture("throttled")
                pid = secrets.token_hex(13)
                shape = self.outcome if self.finish_at_create else "created"
                created = self.shape(shape, pid) | {"input": body.get("input"), "webhook": body.get("webhook")}
                self.created[pid] = created
                return 201, {}, created
            if method == "GET" and path == "/v1/predictions":
                results = list(reversed(self.created.values()))
                return 200, {}, {"previous": None, "next": self.list_next, "results": results}
            if method == "GET" and path == "/v1/webhooks/default/secret":
                return 200, {}, {"key": self.secret}
            match = re.fullmatch(r"/v1/predictions/([^/]+)(/cancel)?", path)
            if match and match[1] in self.created:
                pid = match[1]
                if match[2]:
                    return 200, {}, self.shape("removed", pid) | {"status": "canceled", "data_removed": False}
                self._gets[pid] = self._gets.get(pid, 0) + 1
                return 200, {}, self.shape("processing" if self._gets[pid] == 1 else self.outcome, pid)
            return 404, {}, {"detail": "Not found."}

    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(_Quiet):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw and self.headers.get("content-type") == "application/json" else None
                stand_in.requests.append(Seen(self.command, self.path, dict(self.headers), body))
                status, headers, answer = stand_in._answer(self.command, self.path, body or {})
                data = json.dumps(answer).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        return Handler

    def _delivery_handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                stand_in.deliveries.append(Seen(self.command, self.path, dict(self.headers)))
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", urllib.parse.unquote(self.path.removeprefix("/redirect/")))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(OUTPUT_BYTES)))
                self.end_headers()
                self.wfile.write(OUTPUT_BYTES)

        return Handler


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
