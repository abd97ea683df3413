"""Turn file inputs (our own file or output URLs, ``data:`` URIs, http(s) URLs) into local files."""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from overture.engine.netpolicy import AddressPolicy
from overture.errors import AddressRefused, InputFileError
from overture.models.schema import InputSchema
from overture.store.store import Store

_OWN_FILE = re.compile(r"/v1/files/(?P<id>[A-Za-z0-9_-]+)/?$")
_OWN_OUTPUT = re.compile(r"/v1/outputs/(?P<rel>[A-Za-z0-9_-]+/[^/]+)$")
#: Redirects a download follows, each hop checked as the first URL is.
MAX_REDIRECTS = 10


def own_file_id(url: str) -> str | None:
    """The id of one of our uploaded files that ``url`` names, whatever host the client used."""
    match = _OWN_FILE.search(urllib.parse.urlsplit(url).path)
    return match.group("id") if match else None


def own_output(url: str) -> str | None:
    """``<prediction id>/<name>`` of one of our output files that ``url`` names."""
    match = _OWN_OUTPUT.search(urllib.parse.urlsplit(url).path)
    return match.group("rel") if match else None


def _owns_output(store: Store, rel: str, owner: str) -> bool:
    return store.prediction(rel.partition("/")[0], owner) is not None


def _data_uri_size(uri: str) -> int:
    """An upper bound of the decoded size, without decoding."""
    return len(uri) * 3 // 4


def file_values(schema: InputSchema, values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.name, values[f.name]) for f in schema.fields if f.kind is Path and values.get(f.name)]


class InputResolver:
    def __init__(self, store: Store, max_bytes: int, max_seconds: float, policy: AddressPolicy):
        self.store = store
        self.max_bytes = max_bytes
        #: A whole download must finish in this time: a server trickling bytes forever can't hold a worker.
        self.max_seconds = max_seconds
        #: Where downloads may connect; checked again at every connection, redirects included.
        self.policy = policy

    def errors(self, schema: InputSchema, values: dict[str, Any], owner: str) -> list[tuple[str, str]]:
        """What is wrong with file inputs before anything is fetched, for a 422 at create time
        rather than a failed prediction later: a missing uploaded file or output, a data: URI over
        the size limit, a URL naming an address the policy refuses. A host name is judged when the
        download connects, since only that lookup decides where it goes."""
        errors = []
        for name, url in file_values(schema, values):
            try:
                urllib.parse.urlsplit(url)
            except ValueError:  # such as "http://[::1"
                errors.append((name, "is not a valid URL"))
                continue
            fid = own_file_id(url)
            rel = own_output(url)
            if fid is not None and self.store.file(fid, owner) is None:
                errors.append((name, f"file {fid} does not exist"))
            elif rel is not None and not _owns_output(self.store, rel, owner):
                # Another token's output is as invisible here as it is at /v1/outputs.
                errors.append((name, f"output file {rel} does not exist"))
            elif url[:5].lower() == "data:":
                if _data_uri_size(url) > self.max_bytes:
                    errors.append((name, f"data: URI is larger than the {self.max_bytes} byte limit"))
            elif fid is None and rel is None:
                try:
                    self.policy.check_url(url)
                except AddressRefused as exc:
                    errors.append((name, str(exc)))
        return errors

    def resolve(self, schema: InputSchema, values: dict[str, Any], owner: str, workdir: Path) -> dict[str, Any]:
        """A copy of ``values`` in which each file URL is a local ``Path``."""
        resolved = dict(values)
        for name, url in file_values(schema, values):
            try:
                resolved[name] = self.fetch(url, owner, workdir / f"input-{name}")
            except InputFileError as exc:
                raise InputFileError(f"input.{name}: {exc}") from None
        return resolved

    def fetch(self, url: str, owner: str, target: Path) -> Path:
        fid = own_file_id(url)
        if fid is not None:
            row = self.store.file(fid, owner)
            if row is None:
                raise InputFileError(f"file {fid} does not exist")
            # Keep the uploaded name's extension: decoders sniff formats by it.
            return self._copy(self.store.upload_path(fid), target.with_suffix(Path(row.name).suffix))
        rel = own_output(url)
        if rel is not None:
            try:
                source = self.store.output_path(rel)
            except FileNotFoundError:
                source = Path("/nonexistent")
            if not (source.is_file() and _owns_output(self.store, rel, owner)):
                raise InputFileError(f"output file {rel} does not exist")
            return self._copy(source, target.with_suffix(source.suffix))
        if url[:5].lower() == "data:":
            return self._decode_data_uri(url, target)
        return self._download(url, target)

    def _copy(self, source: Path, target: Path) -> Path:
        shutil.copyfile(source, target)
        return target

    def _decode_data_uri(self, uri: str, target: Path) -> Path:
        header, sep, payload = uri[5:].partition(",")
        if not sep:
            raise InputFileError("malformed data: URI (no comma)")
        if _data_uri_size(payload) > self.max_bytes:
            raise InputFileError(f"data: URI is larger than the {self.max_bytes} byte limit")
        parts = header.split(";")
        try:
            data = (
                base64.b64decode(payload, validate=False)
                if "base64" in parts[1:]
                else urllib.parse.unquote_to_bytes(payload)
            )
        except (binascii.Error, ValueError) as exc:
            raise InputFileError(f"malformed data: URI ({exc})") from None
        if parts[0]:
            target = target.with_suffix(mimetypes.guess_extension(parts[0]) or "")
        target.write_bytes(data)
        return target

    def _download(self, url: str, target: Path) -> Path:
        suffix = Path(urllib.parse.urlsplit(url).path).suffix[:10]
        target = target.with_suffix(suffix)
        size = 0
        deadline = time.monotonic() + self.max_seconds
        try:
            with self.policy.client(timeout=min(30.0, self.max_seconds)) as http:
                response = self._get(http, url)
                try:
                    if response.status_code >= 400:
                        raise InputFileError(f"could not download {url}: HTTP {response.status_code}")
                    with open(target, "wb") as out:
                        for chunk in response.iter_bytes():
                            size += len(chunk)
                            if size > self.max_bytes:
                                raise InputFileError(f"{url} is larger than the {self.max_bytes} byte limit")
                            if time.monotonic() > deadline:
                                raise InputFileError(f"could not download {url} within {self.max_seconds:g} s")
                            out.write(chunk)
                finally:
                    response.close()
        except (httpx.HTTPError, AddressRefused) as exc:
            raise InputFileError(f"could not download {url}: {exc}") from None
        return target

    def _get(self, http: httpx.Client, url: str) -> httpx.Response:
        """The streamed response at the end of ``url``'s redirects. The client connects only to
        addresses the policy allows; a hop to a refused address literal is named as a redirect."""
        request = http.build_request("GET", url)
        for _ in range(MAX_REDIRECTS + 1):
            response = http.send(request, stream=True)
            if response.next_request is None:
                return response
            response.close()
            request = response.next_request
            try:
                self.policy.check_url(str(request.url))
            except AddressRefused as exc:
                raise AddressRefused(f"redirect to {request.url} {exc}") from None
        raise InputFileError(f"could not download {url}: more than {MAX_REDIRECTS} redirects")


def content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
