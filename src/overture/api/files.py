"""Uploaded files (the Files API) and prediction output files, with and without a bearer token."""

from __future__ import annotations

import json
import mimetypes
import re
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from overture.api.auth import Owner, owner_or_signed
from overture.api.deps import Present, Svc, decode_cursor, encode_cursor
from overture.api.errors import ApiError, invalid_request
from overture.api.signing import check_signed
from overture.errors import TooLarge
from overture.ids import new_id
from overture.store.db import FileRow
from overture.store.store import utcnow

router = APIRouter()


@router.post("/v1/files", status_code=201)
async def create_file(request: Request, owner: Owner, svc: Svc, present: Present) -> dict[str, Any]:
    limit = svc.settings.max_upload_bytes
    try:
        # Two files: the JavaScript client sends ``metadata`` as a file part (a JSON Blob) beside ``content``.
        form = await request.form(max_files=2, max_fields=16)
    except HTTPException:
        raise
    except Exception as exc:  # python-multipart raises several types for broken bodies
        raise invalid_request([("content", f"the body is not valid multipart/form-data ({exc})")]) from None
    content = form.get("content")
    if not isinstance(content, UploadFile):
        raise invalid_request([("content", "field required (a multipart part named 'content' with the file)")])
    metadata = _metadata(await _text(form.get("metadata")))
    fid = new_id()
    try:
        stored = await anyio.to_thread.run_sync(partial(svc.engine.store.save_upload, fid, content.file, limit))
    except TooLarge as exc:
        raise ApiError(413, f"The upload is too large: {exc}") from None
    name = content.filename or "file"
    content_type = content.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    row = svc.engine.store.add(
        FileRow(
            id=fid,
            owner=owner,
            name=name,
            content_type=content_type,
            size=stored.size,
            md5=stored.md5,
            sha256=stored.sha256,
            file_metadata=metadata,
            created_at=utcnow(),
        )
    )
    return present.file(row)


async def _text(part: str | UploadFile | None) -> str | None:
    """A form field's text, whether it came as a plain field (Python's client) or as a file part."""
    if not isinstance(part, UploadFile):
        return part
    try:
        return (await part.read()).decode()
    except UnicodeDecodeError:
        return ""


def _metadata(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise invalid_request([("metadata", "must be a JSON object")])
    return value


def _file(svc: Svc, owner: str, file_id: str) -> FileRow:
    row = svc.engine.store.file(file_id, owner)
    if row is None:
        raise ApiError(404, f"File {file_id} does not exist")
    return row


@router.get("/v1/files")
def list_files(owner: Owner, svc: Svc, present: Present, cursor: str | None = Query(default=None)) -> dict[str, Any]:
    size = svc.settings.page_size
    rows = svc.engine.store.files_page(owner, decode_cursor(cursor), size + 1)
    next_path = f"/v1/files?cursor={encode_cursor(rows[size - 1].seq)}" if len(rows) > size else None
    return present.page([present.file(r) for r in rows[:size]], next_path)


@router.get("/v1/files/{file_id}")
def get_file(file_id: str, owner: Owner, svc: Svc, present: Present) -> dict[str, Any]:
    return present.file(_file(svc, owner, file_id))


@router.get("/v1/files/{file_id}/download")
def download_file(file_id: str, owner: Owner, svc: Svc) -> FileResponse:
    row = _file(svc, owner, file_id)
    return _served(svc.engine.store.upload_path(row.id), row.content_type, row.name)


#: Types a browser shows inline without running anything: sound, raster images, data as text.
_INLINE = re.compile(r"audio/[\w.+-]+|image/(png|jpeg|webp|gif)|application/json|text/plain")
#: Whatever a file holds, it is never a page of this origin: no sniffing, no script, no origin.
_CONTAINED = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}


def _served(path: Path, media_type: str, name: str) -> FileResponse:
    """A file a model or a client wrote, served so that it cannot run script on the playground's
    origin (where the token is kept): an HTML or SVG output is downloaded, not shown."""
    inline = _INLINE.fullmatch(media_type.split(";")[0].strip().lower()) is not None
    disposition = "inline" if inline else "attachment"
    return FileResponse(
        path, media_type=media_type, filename=name, content_disposition_type=disposition, headers=_CONTAINED
    )


@router.delete("/v1/files/{file_id}", status_code=204)
def delete_file(file_id: str, owner: Owner, svc: Svc) -> Response:
    svc.engine.store.delete_file(_file(svc, owner, file_id))
    return Response(status_code=204)


def _output_response(svc: Svc, prediction_id: str, name: str) -> FileResponse:
    try:
        path = svc.engine.store.output_path(f"{prediction_id}/{name}")
    except FileNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ApiError(404, f"Output {prediction_id}/{name} does not exist")
    return _served(path, mimetypes.guess_type(name)[0] or "application/octet-stream", name)


#: The token's owner, or None for a reader with an output URL the server signed.
OutputReader = Annotated[str | None, Depends(owner_or_signed(lambda path: f"{path['prediction_id']}/{path['name']}"))]


@router.get("/v1/outputs/{prediction_id}/{name}")
def get_output(prediction_id: str, name: str, owner: OutputReader, svc: Svc) -> FileResponse:
    if owner is not None and svc.engine.store.prediction(prediction_id, owner) is None:
        raise ApiError(404, f"Output {prediction_id}/{name} does not exist")
    return _output_response(svc, prediction_id, name)


@router.get("/signed/outputs/{prediction_id}/{name}")
def get_signed_output(
    prediction_id: str, name: str, svc: Svc, expires: str = Query(default=""), signature: str = Query(default="")
) -> FileResponse:
    """An output without a header, for ``<audio src>``: the URL carries an expiring HMAC instead."""
    check_signed(svc.keys, f"{prediction_id}/{name}", expires, signature)
    return _output_response(svc, prediction_id, name)
