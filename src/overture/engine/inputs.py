"""Turn file inputs (our own file or output URLs, ``data:`` URIs, http(s) URLs) into local files."""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from overture.models.schema import InputSchema
from overture.store.store import Store

_OWN_FILE = re.compile(r"/v1/files/(?P<id>[A-Za-z0-9_-]+)/?$")
_OWN_OUTPUT = re.compile(r"/v1/outputs/(?P<rel>[A-Za-z0-9_-]+/[^/]+)$")


class InputFileError(ValueError):
    """A file input that cannot be read; its message is shown as the prediction's error."""


def own_file_id(url: str) -> str | None:
    """The id of one of our uploaded files that ``url`` names, whatever host the client used."""
    match = _OWN_FILE.search(urllib.parse.urlsplit(url).path)
    return match.group("id") if match else None


def missing_own_files(schema: InputSchema, values: dict[str, Any], store: Store, owner: str) -> list[tuple[str, str]]:
    """Fields naming an uploaded file that does not exist: reported at create time as a 422."""
    errors = []
    for name, url in file_values(schema, values):
        fid = own_file_id(url)
        if fid is not None and store.file(fid, owner) is None:
            errors.append((name, f"file {fid} does not exist"))
    return errors


def file_values(schema: InputSchema, values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.name, values[f.name]) for f in schema.fields if f.kind is Path and values.get(f.name)]


class InputResolver:
    def __init__(self, store: Store, max_bytes: int):
        self.store = store
        self.max_bytes = max_bytes

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
        output = _OWN_OUTPUT.search(urllib.parse.urlsplit(url).path)
        if output is not None:
            try:
                source = self.store.output_path(output.group("rel"))
            except FileNotFoundError:
                source = Path("/nonexistent")
            if not source.is_file():
                raise InputFileError(f"output file {output.group('rel')} does not exist")
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
        if len(payload) * 3 // 4 > self.max_bytes:
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
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
                if response.status_code >= 400:
                    raise InputFileError(f"could not download {url}: HTTP {response.status_code}")
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise InputFileError(f"{url} is larger than the {self.max_bytes} byte limit")
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise InputFileError(f"could not download {url}: {exc}") from None
        return target


def content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
