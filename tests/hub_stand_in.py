"""A Hugging Face hub on loopback, serving repos from memory in the hub's layout, for
huggingface_hub itself to download from (``HF_ENDPOINT``): the repo metadata and tree routes,
and ``resolve`` with ETag, ``X-Repo-Commit``, ``Content-Length`` and Range requests. It records
every request, can hold a file's download after some bytes, and refuses gated repos without
the right token as the hub does (``X-Error-Code: GatedRepo``)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    #: The commit that ``main`` points to.
    sha: str = field(default_factory=lambda: secrets.token_hex(20))

    @staticmethod
    def from_directory(directory: Path, **kwargs: object) -> Repo:
        files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        return Repo(files, **kwargs)  # type: ignore[arg-type]


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    #: Body bytes sent in answer.
    sent: int = 0


class HubStandIn:
    #: The token that passes the gate of gated repos.
    TOKEN = "hf_stand_in_token"

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        #: path in repo → bytes to send of it before waiting for ``release``.
        self.hold_after: dict[str, int] = {}
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def downloads(self, name: str) -> list[Request]:
        """The GET requests for a file's bytes."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(f"/{name}")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                request = Request(self.command, self.path, self.headers.get("Range"))
                hub.requests.append(request)
                path = unquote(urlsplit(self.path).path)
                if match := re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", path):
                    return self._metadata(match[1])
                if match := re.fullmatch(r"/api/models/(.+)/tree/([^/]+)", path):
                    return self._tree(match[1])
                if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve(request, match[1], match[2], match[3], body)
                self._json(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})

            def _repo(self, name: str) -> Repo | None:
                repo = hub.repos.get(name)
                if repo is None:
                    self._json(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return repo

            def _metadata(self, name: str) -> None:
                if (repo := self._repo(name)) is not None:
                    siblings = [{"rfilename": p} for p in sorted(repo.files)]
                    self._json(200, {"id": name, "sha": repo.sha, "siblings": siblings, "gated": repo.gated})

            def _tree(self, name: str) -> None:
                if (repo := self._repo(name)) is not None:
                    entries = [
                        {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for p, data in sorted(repo.files.items())
                    ]
                    self._json(200, entries)

            def _resolve(self, request: Request, name: str, revision: str, file: str, body: bool) -> None:
                repo = self._repo(name)
                if repo is None:
                    return
                if repo.gated and self.headers.get("Authorization") != f"Bearer {hub.TOKEN}":
                    message = "Access to this model is restricted: you must have access to it and be authenticated."
                    return self._json(
                        403, {"error": message}, {"X-Error-Code": "GatedRepo", "X-Error-Message": message}
                    )
                data = repo.files.get(file)
                if data is None or revision not in ("main", repo.sha):
                    return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                start = int(request.range.removeprefix("bytes=").split("-")[0]) if request.range else 0
                self.send_response(206 if start else 200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if body:
                    self._send(request, data[start:], hub.hold_after.get(file))

            def _send(self, request: Request, data: bytes, hold_after: int | None) -> None:
                try:
                    if hold_after is not None:
                        self.wfile.write(data[:hold_after])
                        self.wfile.flush()
                        request.sent = hold_after
                        hub.release.wait()
                        data = data[hold_after:]
                    self.wfile.write(data)
                    request.sent += len(data)
                except OSError:  # the client went away
                    self.close_connection = True

            def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

        return Handler
