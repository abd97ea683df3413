"""Webhook delivery: signed (Standard Webhooks), throttled, retried with backoff, kept in the database.

Each event becomes a row before anything is sent, so a restart continues where the last process
stopped. A prediction's deliveries go out in order, one at a time; different predictions proceed
in parallel with bounded concurrency and a timeout per attempt, so one slow receiver delays only
its own prediction's events.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import secrets
import threading
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from standardwebhooks.webhooks import Webhook

from overture.engine.netpolicy import AddressPolicy
from overture.engine.telemetry import Telemetry
from overture.errors import AddressRefused, WebhookRefused
from overture.store.db import DeliveryRow, PredictionRow
from overture.store.secrets import Keys
from overture.store.store import Store, utcnow

EVENTS = ("start", "output", "logs", "completed")
_INTERMEDIATE = ("output", "logs")


@dataclass
class WebhookPolicy:
    #: Keep retrying a failing delivery this long after the event.
    retry_seconds: float = 3600.0
    #: First retry delay; doubled each attempt (with jitter) up to ``max_backoff_seconds``.
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    timeout_seconds: float = 10.0
    concurrency: int = 16
    #: ``output``/``logs`` at most this often per prediction.
    throttle_seconds: float = 0.5
    #: Where deliveries may connect; checked at every connection.
    addresses: AddressPolicy = AddressPolicy("webhook", "send webhooks to")


class Renderer(Protocol):
    """Shows a prediction as ``GET`` does, for a delivery's body."""

    def prediction(self, row: PredictionRow) -> dict[str, Any]: ...


@dataclass
class WebhookSubscription:
    """Where one prediction's webhook events go, which of them, and when its next ``output`` or
    ``logs`` delivery may leave (Cog's response throttler): the latest state wins in between."""

    owner: str
    url: str
    events: frozenset[str] = frozenset(EVENTS)
    throttle_seconds: float = 0.5
    _next_intermediate: datetime | None = None

    def wants(self, event: str) -> bool:
        return event in self.events

    def due(self, event: str, now: datetime) -> datetime:
        """When this event's delivery may be sent, and the spacing it imposes on the next."""
        if event not in _INTERMEDIATE:
            return now
        due = now if self._next_intermediate is None else max(now, self._next_intermediate)
        self._next_intermediate = due + timedelta(seconds=self.throttle_seconds)
        return due


def check_url(url: str, addresses: AddressPolicy) -> None:
    """Refuse what a webhook must not be: a non-http(s) URL, or one naming a refused address.
    A host name is judged when a delivery connects, since only that lookup decides where it goes."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("must be an http(s) URL")
    try:
        addresses.check_url(url)
    except AddressRefused as exc:
        raise WebhookRefused(str(exc)) from None


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: an integer or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class WebhookDispatcher:
    def __init__(
        self,
        store: Store,
        keys: Keys,
        renderer: Renderer,
        policy: WebhookPolicy,
        telemetry: Telemetry | None = None,
    ):
        self.store = store
        self.keys = keys
        self.renderer = renderer
        self.policy = policy
        #: None with ``--no-metrics``.
        self.telemetry = telemetry
        self._in_flight: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    # -- producing -----------------------------------------------------------------------------

    def subscription(self, owner: str, url: str, events: list[str] | None) -> WebhookSubscription:
        return WebhookSubscription(owner, url, frozenset(events or EVENTS), self.policy.throttle_seconds)

    def enqueue(self, subscription: WebhookSubscription, row: PredictionRow, event: str) -> None:
        """Store ``event``'s delivery of ``row`` as it is now, to be sent when due."""
        body = self._body(row)
        # The latest state wins: an unsent output/logs delivery just gets the newer body.
        if event in _INTERMEDIATE and self.store.refresh_unsent(row.id, _INTERMEDIATE, event, body):
            return
        self.store.add(self.delivery(subscription, row, event, body))
        self.wake()

    def delivery(
        self, subscription: WebhookSubscription, row: PredictionRow, event: str, body: str | None = None
    ) -> DeliveryRow:
        """``event``'s delivery of ``row``, for the caller to store (then ``wake``)."""
        now = utcnow()
        return DeliveryRow(
            id="msg_" + secrets.token_urlsafe(18),
            prediction_id=row.id,
            owner=subscription.owner,
            url=subscription.url,
            event=event,
            body=body if body is not None else self._body(row),
            state="pending",
            attempts=0,
            next_attempt_at=subscription.due(event, now),
            created_at=now,
        )

    def _body(self, row: PredictionRow) -> str:
        return json.dumps(self.renderer.prediction(row), separators=(",", ":"))

    def wake(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- delivering ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.wake()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        limit = asyncio.Semaphore(self.policy.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        async with self.policy.addresses.async_client(self.policy.timeout_seconds) as http:
            while not self._stopping.is_set():
                self._wake.clear()
                next_due = self._dispatch_due(http, limit, tasks)
                delay = 1.0 if next_due is None else min(1.0, max(0.0, (next_due - utcnow()).total_seconds()))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass
            for task in tasks:
                task.cancel()

    def _dispatch_due(
        self, http: httpx.AsyncClient, limit: asyncio.Semaphore, tasks: set[asyncio.Task[None]]
    ) -> datetime | None:
        """Start every delivery that is due and first in its prediction's line; return the next due time."""
        now = utcnow()
        next_due = None
        first_per_prediction: dict[str, DeliveryRow] = {}
        for row in self.store.pending_deliveries(limit=1000):
            first_per_prediction.setdefault(row.prediction_id, row)
        for pid, row in first_per_prediction.items():
            if pid in self._in_flight:
                continue
            if row.next_attempt_at > now:
                next_due = row.next_attempt_at if next_due is None else min(next_due, row.next_attempt_at)
                continue
            self._in_flight.add(pid)
            task = asyncio.create_task(self._attempt(http, limit, row))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return next_due

    async def _attempt(self, http: httpx.AsyncClient, limit: asyncio.Semaphore, row: DeliveryRow) -> None:
        try:
            async with limit:
                await self._send(http, row)
        finally:
            self._in_flight.discard(row.prediction_id)
            self.wake()

    async def _send(self, http: httpx.AsyncClient, row: DeliveryRow) -> None:
        attempts = row.attempts + 1
        self.store.update_delivery(row.id, attempts=attempts)
        now = datetime.now(UTC)
        signature = Webhook(self.keys.webhook_secret(row.owner)).sign(row.id, now, row.body)
        headers = {
            "content-type": "application/json",
            "user-agent": "overture-webhooks/0.1",
            "webhook-id": row.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        wait: float | None = None
        try:
            response = await http.post(row.url, content=row.body.encode(), headers=headers)
        except AddressRefused as exc:
            self.store.update_delivery(row.id, state="failed", last_error=str(exc))
            self._count(row, "failed")
            return
        except httpx.HTTPError as exc:
            status: int | None = None
            error = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                self.store.update_delivery(
                    row.id, state="delivered", last_status=status, last_error=None, delivered_at=utcnow()
                )
                self._count(row, "delivered")
                return
            wait = retry_after(response.headers.get("retry-after"))
            if not (status == 429 or status >= 500):
                # The receiver rejected it for good (other 4xx, or a redirect we don't follow).
                self.store.update_delivery(row.id, state="failed", last_status=status, last_error=f"HTTP {status}")
                self._count(row, "failed")
                return
            error = f"HTTP {status}"
        self._schedule_retry(row, attempts, status, error, wait)

    def _schedule_retry(
        self, row: DeliveryRow, attempts: int, status: int | None, error: str, wait: float | None
    ) -> None:
        backoff = min(self.policy.backoff_seconds * 2 ** (attempts - 1), self.policy.max_backoff_seconds)
        delay = backoff * random.uniform(0.5, 1.0)
        if wait is not None:
            delay = max(delay, min(wait, self.policy.retry_seconds))
        next_at = utcnow() + timedelta(seconds=delay)
        if next_at > row.created_at + timedelta(seconds=self.policy.retry_seconds):
            self.store.update_delivery(
                row.id, state="failed", last_status=status, last_error=f"{error}; gave up retrying"
            )
            self._count(row, "failed")
        else:
            self.store.update_delivery(row.id, next_attempt_at=next_at, last_status=status, last_error=error)
            if self.telemetry is not None:
                self.telemetry.delivery_retried(row.event)

    def _count(self, row: DeliveryRow, outcome: str) -> None:
        """The delivery ended: ``delivered`` or ``failed``."""
        if self.telemetry is not None:
            self.telemetry.delivery_ended(row.event, outcome)


def delivery_summary(rows: list[DeliveryRow]) -> dict[str, Any]:
    """The webhook's state for the prediction record (an Overture key the client ignores)."""
    last = max((r for r in rows if r.attempts), key=lambda r: r.seq, default=None)
    return {
        "delivered": sum(r.state == "delivered" for r in rows),
        "pending": sum(r.state == "pending" for r in rows),
        "failed": sum(r.state == "failed" for r in rows),
        "attempts": sum(r.attempts for r in rows),
        "last_status": last.last_status if last else None,
        "last_error": last.last_error if last else None,
    }
