"""What the relay asks of an upstream Replicate API, over HTTP: create, get, cancel, find, upload,
its webhook secret, and downloads of its output files.

Throttling (429) waits for ``Retry-After`` and asks again; a 5xx or a connection that fails is
asked again with backoff until ``timeout_seconds`` have passed since the first failure, then
``UpstreamUnavailable``. Any other refusal is ``UpstreamRefused``, with the upstream's own detail.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from overture.engine.webhooks import retry_after
from overture.upstreams import Upstream

log = logging.getLogger("overture")

#: Retries after a 5xx or a failed connection start this far apart, doubling up to ``_MAX_BACKOFF``.
_FIRST_BACKOFF = 0.2
_MAX_BACKOFF = 5.0
#: Pages of the upstream's prediction list searched for a prediction whose create's answer was lost.
FIND_PAGES = 5


class UpstreamError(Exception):
    """What went wrong with an upstream, in words for the prediction's ``error``."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, or kept answering 5xx, for longer than allowed."""


class UpstreamRefused(UpstreamError):
    """The upstream answered a 4xx other than 429: asking again would get the same."""


class UpstreamAPI:
    def __init__(self, upstream: Upstream, timeout_seconds: float):
        self.upstream = upstream
        self.timeout_seconds = timeout_seconds
        headers = {"User-Agent": "overture-relay/0.1"}
        if upstream.token:
            headers["Authorization"] = f"Bearer {upstream.token}"
        self._origin = _origin(upstream.url)
        self.http = httpx.AsyncClient(
            base_url=upstream.url, headers=headers, timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False
        )
        #: Downloads go to any host (Replicate's outputs are on its delivery host): no token there.
        self.delivery = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=True)

    async def close(self) -> None:
        await self.http.aclose()
        await self.delivery.aclose()

    # -- predictions -----------------------------------------------------------------------------

    async def create(
        self,
        model: str,
        version: str | None,
        inputs: dict[str, Any],
        webhook: str | None,
        key: str,
        wait: int,
    ) -> dict[str, Any]:
        """Create the prediction, holding the request up to ``wait`` seconds (``Prefer: wait``) so
        that a short one comes back finished. ``key`` is sent as ``Idempotency-Key``: an Overture
        upstream answers a create it has seen with the prediction it made then."""
        body: dict[str, Any] = {"input": inputs}
        if webhook is not None:
            # Only the end: each event costs both servers a request, and the polls bring the start and logs.
            body |= {"webhook": webhook, "webhook_events_filter": ["completed"]}
        headers = {"Prefer": f"wait={wait}", "Idempotency-Key": key}
        if version is not None:
            path = "/v1/predictions"
            body["version"] = version
        else:
            path = f"/v1/models/{model}/predictions"
        timeout = httpx.Timeout(30.0 + wait, connect=5.0)
        return _object(await self.request("POST", path, json=body, headers=headers, timeout=timeout))

    async def get(self, upstream_id: str) -> dict[str, Any]:
        return _object(await self.request("GET", f"/v1/predictions/{upstream_id}"))

    async def cancel(self, upstream_id: str) -> dict[str, Any]:
        return _object(await self.request("POST", f"/v1/predictions/{upstream_id}/cancel"))

    async def find(self, marker: str, since: datetime) -> dict[str, Any] | None:
        """The newest prediction whose webhook URL holds ``marker``, among those created after
        ``since`` on the first ``FIND_PAGES`` pages of the list: the one a lost create made."""
        path: str | None = "/v1/predictions"
        for _ in range(FIND_PAGES):
            if path is None:
                return None
            page = _object(await self.request("GET", path))
            for item in page.get("results") or []:
                if marker in str(item.get("webhook") or ""):
                    return item
                created = _moment(item.get("created_at"))
                if created is not None and created < since:
                    return None  # the list is newest first: what is left is older than the create
            path = page.get("next")
        return None

    async def model(self, ref: str) -> dict[str, Any]:
        return _object(await self.request("GET", f"/v1/models/{ref}"))

    # -- webhooks and files ----------------------------------------------------------------------

    async def webhook_secret(self) -> str:
        return str(_object(await self.request("GET", "/v1/webhooks/default/secret"))["key"])

    async def upload(self, path: Path) -> str:
        """Upload a file input through ``/v1/files``; the URL the upstream reads it back from."""
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files = {"content": (path.name, path.read_bytes(), content_type)}
        body = _object(await self.request("POST", "/v1/files", files=files))
        return str(body["urls"]["get"])

    async def download(self, url: str, target: Path) -> Path:
        """Fetch one output file into ``target``; the token goes only to the upstream's own host."""
        if url.startswith("data:"):
            header, _, payload = url[5:].partition(",")
            data = base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
            target.write_bytes(data)
            return target
        client = self.http if _origin(url) == self._origin else self.delivery
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with client.stream("GET", url) as response:
                    if response.status_code < 400:
                        with open(target, "wb") as out:
                            async for chunk in response.aiter_bytes():
                                out.write(chunk)
                        return target
                    status = response.status_code
            except httpx.HTTPError as exc:
                status = None
                problem = f"{type(exc).__name__}: {exc}"
            else:
                problem = f"HTTP {status}"
                if status is not None and status < 500 and status != 429:
                    raise UpstreamRefused(f"Could not download the output file {url} from {self.name}: {problem}.")
            await self._pause(started, problem, url, attempt)

    # -- the one place requests are made -----------------------------------------------------------

    @property
    def name(self) -> str:
        return f"the upstream {self.upstream.name!r} ({self.upstream.url})"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                await self._pause(started, f"{type(exc).__name__}: {exc}", path, attempt)
                continue
            if response.status_code == 429:
                # Throttled: asked again after the wait it names, for as long as it takes.
                wait = retry_after(response.headers.get("retry-after"))
                log.info("%s throttled %s %s; asking again in %.1f s", self.name, method, path, wait or 1.0)
                await asyncio.sleep(wait if wait is not None else 1.0)
                continue
            if response.status_code >= 500:
                await self._pause(started, f"HTTP {response.status_code}: {_detail(response)}", path, attempt)
                continue
            if response.status_code >= 400:
                raise UpstreamRefused(
                    f"{self.name} refused {method} {path} with HTTP {response.status_code}: {_detail(response)}"
                )
            return response

    async def _pause(self, started: float, problem: str, what: str, attempt: int = 1) -> None:
        """Wait before asking again, or raise once the upstream has failed for too long."""
        if time.monotonic() - started > self.timeout_seconds:
            raise UpstreamUnavailable(
                f"{self.name} could not be reached or kept failing for {self.timeout_seconds:g} s ({problem})."
            )
        await asyncio.sleep(min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** (attempt - 1)))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamRefused(f"the upstream answered {response.request.url} with something that is not a JSON object")
    return body


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:500]
    return str(body)[:200]


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
