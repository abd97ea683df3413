"""What the relay asks of an upstream Replicate API, over HTTP: create, get, cancel, find, upload,
its webhook secret, and downloads of its output files.

Throttling (429) waits for ``Retry-After`` (at most ``MAX_RETRY_AFTER`` at a time) and asks again;
a 5xx or a connection that fails is asked again with backoff. Either gives up once
``timeout_seconds`` have passed since the first failure: ``UpstreamUnavailable``. Any other
refusal is ``UpstreamRefused``, with the upstream's own detail. A caller can pass an event that
ends the waits between tries (a cancel): ``UpstreamCanceled``.

The token goes to the upstream's own host only. Output files are downloaded as file inputs are:
through a client that connects only where the input address policy allows, redirects followed by
hand with each hop checked, at most ``max_input_file_bytes`` within ``input_download_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from overture.engine.inputs import MAX_REDIRECTS
from overture.engine.netpolicy import AddressPolicy
from overture.engine.webhooks import retry_after
from overture.errors import AddressRefused
from overture.upstreams import Upstream

log = logging.getLogger("overture")

#: Retries after a 5xx or a failed connection start this far apart, doubling up to ``_MAX_BACKOFF``.
_FIRST_BACKOFF = 0.2
_MAX_BACKOFF = 5.0
#: The longest single wait a ``Retry-After`` gets; the waits together stop at ``timeout_seconds``.
MAX_RETRY_AFTER = 30.0
#: Pages of the upstream's prediction list searched for a prediction whose create's answer was lost.
FIND_PAGES = 5
#: The signing secret is asked with one short request, never held up by the retries.
SECRET_SECONDS = 5.0


class UpstreamError(Exception):
    """What went wrong with an upstream, in words for the prediction's ``error``."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, or kept answering 5xx, for longer than allowed."""


class UpstreamRefused(UpstreamError):
    """The upstream answered a 4xx other than 429: asking again would get the same."""


class UpstreamCanceled(Exception):
    """The caller's event ended the waits between tries: nothing more is asked."""


@dataclass(frozen=True)
class DownloadLimits:
    """Where output files may be fetched from, how large they may be and how long they may take:
    the file inputs' limits (``address_policy(settings, "input")``, ``--max-input-file-bytes``,
    ``--input-download-timeout``)."""

    policy: AddressPolicy
    max_bytes: int
    max_seconds: float


class UpstreamAPI:
    def __init__(self, upstream: Upstream, timeout_seconds: float, limits: DownloadLimits) -> None:
        self.upstream = upstream
        self.timeout_seconds = timeout_seconds
        self.limits = limits
        self._origin = _origin(upstream.url)
        self.http = httpx.AsyncClient(
            base_url=upstream.url,
            headers=upstream.headers(),
            timeout=httpx.Timeout(30.0, connect=5.0),
            follow_redirects=False,
        )
        #: Output files on any other host (Replicate's delivery host): no token, only allowed addresses.
        self.delivery = limits.policy.async_client(timeout=30.0)

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
        stop: asyncio.Event | None = None,
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
        return _object(await self.request("POST", path, json=body, headers=headers, timeout=timeout, stop=stop))

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
                created = moment(item.get("created_at"))
                if created is not None and created < since:
                    return None  # the list is newest first: what is left is older than the create
            path = page.get("next")
            if path and urllib.parse.urlsplit(path).netloc and _origin(path) != self._origin:
                # The token would go there: a list is paged on its own host.
                raise UpstreamRefused(f"{self.name} gave a next page on another host ({path}), which is not followed")
        return None

    async def has_version(self, model: str, version: str) -> bool:
        try:
            await self.request("GET", f"/v1/models/{model}/versions/{version}")
        except UpstreamRefused:  # 404: it has no such version, or no such model to ask of
            return False
        return True

    # -- webhooks and files ----------------------------------------------------------------------

    async def webhook_secret(self) -> str:
        """Asked once, briefly: a caller that gets no answer asks again later."""
        try:
            response = await self.http.get("/v1/webhooks/default/secret", timeout=SECRET_SECONDS)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{self.name} could not be reached ({type(exc).__name__}: {exc})") from None
        if response.status_code != 200:
            raise UpstreamRefused(f"{self.name} answered HTTP {response.status_code}: {_detail(response)}")
        key = _object(response).get("key")
        if not isinstance(key, str):
            raise UpstreamRefused(f"{self.name} answered its webhook secret without a key")
        return key

    async def upload(self, path: Path, stop: asyncio.Event | None = None) -> str:
        """Upload a file input through ``/v1/files``, streamed from disk; the URL the upstream reads it back from."""
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with open(path, "rb") as content:
            # httpx reads the open file as it sends it: the file is never held in memory whole.
            files = {"content": (path.name, content, content_type)}
            body = _object(await self.request("POST", "/v1/files", files=files, stop=stop))
        return str(body["urls"]["get"])

    async def download(self, url: str, target: Path) -> Path:
        """Fetch one output file into ``target`` within the download limits; the token goes only
        to the upstream's own host. A file that cannot be had raises ``UpstreamError`` saying why."""
        limits = self.limits
        if url.startswith("data:"):
            header, _, payload = url[5:].partition(",")
            data = base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
            if len(data) > limits.max_bytes:
                raise UpstreamRefused(
                    f"The output file from {self.name} is larger than the {limits.max_bytes} byte limit."
                )
            target.write_bytes(data)
            return target
        started = time.monotonic()
        attempt = 0
        try:
            async with asyncio.timeout(limits.max_seconds):
                while True:
                    attempt += 1
                    try:
                        return await self._fetch(url, target)
                    except _TryAgain as exc:
                        problem = str(exc)
                    except httpx.HTTPError as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                    await self._pause(started, problem, url, attempt)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"Could not download the output file {url} from {self.name} within {limits.max_seconds:g} s."
            ) from None
        except AddressRefused as exc:
            raise UpstreamRefused(f"Could not download the output file {url} from {self.name}: it {exc}.") from None

    async def _fetch(self, url: str, target: Path) -> Path:
        """One try: the redirects followed, each hop on another host checked against the policy."""
        redirected = False
        for _ in range(MAX_REDIRECTS + 1):
            ours = _origin(url) == self._origin
            if not ours:
                try:
                    self.limits.policy.check_url(url)
                except AddressRefused as exc:
                    raise AddressRefused(f"was redirected to {url}, which {exc}" if redirected else str(exc)) from None
            async with (self.http if ours else self.delivery).stream("GET", url) as response:
                status = response.status_code
                if response.has_redirect_location:
                    redirected, url = True, urllib.parse.urljoin(url, response.headers["location"])
                    continue
                if 200 <= status < 300:
                    return await self._save(response, url, target)
                if status == 429 or status >= 500:
                    raise _TryAgain(f"HTTP {status}")
                raise UpstreamRefused(f"Could not download the output file {url} from {self.name}: HTTP {status}.")
        raise UpstreamRefused(
            f"Could not download the output file {url} from {self.name}: more than {MAX_REDIRECTS} redirects."
        )

    async def _save(self, response: httpx.Response, url: str, target: Path) -> Path:
        size = 0
        with open(target, "wb") as out:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.limits.max_bytes:
                    raise UpstreamRefused(
                        f"The output file {url} from {self.name} is larger than the {self.limits.max_bytes} byte limit."
                    )
                out.write(chunk)
        return target

    # -- the one place requests are made -----------------------------------------------------------

    @property
    def name(self) -> str:
        return f"the upstream {self.upstream.name!r} ({self.upstream.url})"

    async def request(self, method: str, path: str, stop: asyncio.Event | None = None, **kwargs: Any) -> httpx.Response:
        """The upstream's answer, asked again after throttling and failures (see the module's
        docstring); ``stop``, once set, ends the waits: ``UpstreamCanceled``."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                await self._pause(started, f"{type(exc).__name__}: {exc}", path, attempt, stop)
                continue
            if response.status_code == 429:
                # Throttled: asked again after the wait it names, within the time an upstream may take.
                wait = min(MAX_RETRY_AFTER, retry_after(response.headers.get("retry-after")) or 1.0)
                if time.monotonic() + wait - started > self.timeout_seconds:
                    raise UpstreamUnavailable(
                        f"{self.name} kept throttling {method} {path} (HTTP 429) for {self.timeout_seconds:g} s."
                    )
                log.info("%s throttled %s %s; asking again in %.1f s", self.name, method, path, wait)
                await _sleep(wait, stop)
                continue
            if response.status_code >= 500:
                await self._pause(started, f"HTTP {response.status_code}: {_detail(response)}", path, attempt, stop)
                continue
            if response.status_code >= 400:
                raise UpstreamRefused(
                    f"{self.name} refused {method} {path} with HTTP {response.status_code}: {_detail(response)}"
                )
            return response

    async def _pause(
        self, started: float, problem: str, what: str, attempt: int = 1, stop: asyncio.Event | None = None
    ) -> None:
        """Wait before asking again, or raise once the upstream has failed for too long."""
        if time.monotonic() - started > self.timeout_seconds:
            raise UpstreamUnavailable(
                f"{self.name} could not be reached or kept failing for {self.timeout_seconds:g} s ({problem})."
            )
        await _sleep(min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** (attempt - 1)), stop)


class _TryAgain(Exception):
    """A download answered with 429 or a 5xx."""


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep, or raise ``UpstreamCanceled`` as soon as ``stop`` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    if stop.is_set():
        raise UpstreamCanceled
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return
    raise UpstreamCanceled


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


def moment(value: Any) -> datetime | None:
    """An ISO-8601 time as Replicate and Overture write them (``Z`` or an offset; UTC without one)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
