"""JSON shapes the real client validates (replicate-api.md section 3), with absolute public URLs."""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request

from overture.api.signing import page_subject, signed_query, stream_subject
from overture.engine.queueing import QueueSpot
from overture.models.base import Model, Version
from overture.models.schema import COG_VERSION
from overture.outputs import FILE_REF, map_files
from overture.status import TERMINAL
from overture.store.db import FileRow, PredictionRow
from overture.store.secrets import Keys

#: ``expires_at`` of what is never deleted: the last moment a ``date-time`` can name.
NEVER = "9999-12-31T23:59:59.999Z"


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None


class Presenter:
    """Builds response bodies for one request, so every URL uses the base that client can reach.

    With ``signed_outputs``, output URLs carry a signature, for a reader that opens them without the
    token; they still name ``/v1/outputs``, so they work as inputs and with the token too."""

    def __init__(
        self,
        base: str,
        keys: Keys,
        signed_ttl: int,
        retention_hours: float | None = None,
        signed_outputs: bool = False,
    ):
        self.base = base.rstrip("/")
        self.keys = keys
        self.signed_ttl = signed_ttl
        self.retention_hours = retention_hours
        self.signed_outputs = signed_outputs
        #: Set for a reader holding only a shared link: see ``for_link``.
        self.link_expires: int | None = None

    def for_link(self, expires: int) -> Presenter:
        """For a reader with only a prediction's signed page (a shared link, no token): the URLs it
        gets expire with that link, so a link cannot renew itself, and it does not see where the
        owner's webhook goes."""
        shared = copy.copy(self)
        shared.link_expires = expires
        return shared

    def _signed(self, subject: str) -> str:
        return signed_query(self.keys, subject, self.signed_ttl, self.link_expires)

    @staticmethod
    def public_base(request: Request, configured: str | None) -> str:
        """The configured public URL, else what the proxy (``X-Forwarded-*``) or the client used."""
        if configured:
            return configured
        headers = request.headers
        proto = _first(headers.get("x-forwarded-proto")) or request.url.scheme
        host = _first(headers.get("x-forwarded-host")) or headers.get("host") or request.url.netloc
        prefix = (_first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
        return f"{proto}://{host}{prefix}"

    # -- predictions ---------------------------------------------------------------------------

    def prediction(
        self,
        row: PredictionRow,
        status: str | None = None,
        webhook: dict[str, Any] | None = None,
        queue: QueueSpot | None = None,
    ) -> dict[str, Any]:
        """The prediction; ``status`` overrides the stored one, ``webhook`` is its delivery summary,
        ``queue`` its place in line while it waits."""
        url = f"{self.base}/v1/predictions/{row.id}"
        body: dict[str, Any] = {
            "id": row.id,
            "model": row.model,
            "version": row.version,
            "input": row.input,
            "output": self._output(row.output, self.output_url),
            "logs": row.logs,
            "error": row.error,
            "status": status or row.status,
            "source": row.source,
            "data_removed": row.data_removed,
            "created_at": timestamp(row.created_at),
            "started_at": timestamp(row.started_at),
            "completed_at": timestamp(row.completed_at),
            "deadline": timestamp(row.deadline),
            "urls": {
                "get": url,
                "cancel": f"{url}/cancel",
                "stream": self.stream_url(row.id),
                "web": self.web_url(row.id),
            },
            "webhook": row.webhook,
            "webhook_events_filter": row.webhook_events_filter,
        }
        if row.status in TERMINAL and row.completed_at is not None:
            # A relayed prediction keeps the upstream's own metrics; the times are this server's
            # (predict_time the upstream's, total_time as this server's client waited).
            upstream = (row.upstream or {}).get("metrics")
            body["metrics"] = {
                **(upstream if isinstance(upstream, dict) else {}),
                "predict_time": row.predict_time or 0.0,
                "total_time": round((row.completed_at - row.created_at).total_seconds(), 6),
            }
        if row.deployment is not None:
            body["deployment"] = row.deployment
        # Overture extra: where it ran, "local" or the upstream's name (docs/providers.md).
        body["provider"] = row.provider
        if webhook is not None:
            body["webhook_delivery"] = webhook
        if queue is not None:
            # Overture extra, kept in memory and never stored: the line ends the logs until it starts.
            body["queue_position"] = queue.position
            body["logs"] = f"{row.logs or ''}{queue.line()}\n"
        if row.output is not None:
            # Overture extra: the same output as URLs that work without a header, e.g. in <audio src>.
            body["signed_output"] = self._output(row.output, self.signed_output_url)
        if self.link_expires is not None:
            for name in ("webhook", "webhook_events_filter", "webhook_delivery"):
                body.pop(name, None)
        return body

    def stream_data(self, value: Any) -> str:
        """An event's ``data``: file URLs and text as they are, anything else as JSON."""
        value = self._output(value, self.output_url)
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    def _output(self, value: Any, url_for: Callable[[str], str]) -> Any:
        return map_files(value, lambda ref: url_for(ref[FILE_REF]))

    def output_url(self, rel: str) -> str:
        url = f"{self.base}/v1/outputs/{urllib.parse.quote(rel)}"
        return f"{url}?{self._signed(rel)}" if self.signed_outputs else url

    def signed_output_url(self, rel: str) -> str:
        return f"{self.base}/signed/outputs/{urllib.parse.quote(rel)}?{self._signed(rel)}"

    def stream_url(self, pid: str) -> str:
        """Signed: a browser's ``EventSource`` and the JavaScript client's stream reader send no token."""
        return f"{self.base}/v1/predictions/{pid}/stream?{self._signed(stream_subject(pid))}"

    def web_url(self, pid: str) -> str:
        """The prediction's page, signed: a browser's address bar cannot send the bearer token."""
        return f"{self.base}/p/{pid}?{self._signed(page_subject(pid))}"

    # -- models --------------------------------------------------------------------------------

    def model(self, model: Model, run_count: int) -> dict[str, Any]:
        return {
            "url": f"{self.base}/{model.ref}",
            "owner": model.owner,
            "name": model.name,
            "description": model.description,
            "visibility": "public",
            "github_url": model.github_url,
            "paper_url": model.paper_url,
            "license_url": model.license_url,
            "cover_image_url": None,
            "run_count": run_count,
            "default_example": None,
            "is_official": True,
            "created_at": model.created_at,
            "latest_version": self.version(model.latest_version),
        }

    @staticmethod
    def version(version: Version) -> dict[str, Any]:
        return {
            "id": version.id,
            "created_at": version.created_at,
            "cog_version": COG_VERSION,
            "openapi_schema": version.openapi_schema,
        }

    # -- files ---------------------------------------------------------------------------------

    def file(self, row: FileRow) -> dict[str, Any]:
        url = f"{self.base}/v1/files/{row.id}"
        # Replicate's document has no null here: a file kept forever expires at the end of time.
        expires = NEVER
        if self.retention_hours is not None:
            expires = timestamp(row.created_at + timedelta(hours=self.retention_hours)) or NEVER
        return {
            "id": row.id,
            "name": row.name,
            "content_type": row.content_type,
            "size": row.size,
            "etag": row.md5,
            "checksums": {"sha256": row.sha256, "md5": row.md5},
            "metadata": row.file_metadata,
            "created_at": timestamp(row.created_at),
            "expires_at": expires,
            "urls": {"get": url, "download": f"{url}/download"},
        }

    def page(self, results: list[dict[str, Any]], next_path: str | None) -> dict[str, Any]:
        return {"previous": None, "next": f"{self.base}{next_path}" if next_path else None, "results": results}
