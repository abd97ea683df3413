"""An upstream Replicate API as one more worker transport: jobs go out over HTTP, and what the
upstream reports comes back as the same typed events a worker process sends, so routing, cancel,
the result cache, webhooks and streams need no second path.

Each relayed prediction is followed by one task on the relay's event loop (its own thread). The
upstream's webhooks, sent to a URL of this server's own and verified with the upstream's signing
secret, bring each end at once; the task polls too, with backoff, for the status and logs
before it, so an upstream that cannot reach this server is still followed.

None is lost or created twice across a restart: the prediction's ``upstream`` record is written
before the create is sent, with this server's prediction id as the create's ``Idempotency-Key``
(an Overture upstream answers a key it has seen with the prediction it made then) and inside the
webhook URL (so a create whose answer was lost is found again in the upstream's prediction list,
on api.replicate.com too). Output files are downloaded into the job's scratch before ``Done``, so
the engine stores them as it stores a local model's: clients get this server's durable URLs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import re
import threading
import urllib.parse
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

from overture.engine.workers.protocol import Done, Job, JobEvent, Log, Progress, Started
from overture.engine.workers.transport import EventSink, WorkerLost
from overture.engine.workers.upstream_api import (
    DownloadLimits,
    UpstreamAPI,
    UpstreamCanceled,
    UpstreamError,
    UpstreamRefused,
    moment,
)
from overture.status import Status
from overture.store.store import Store, utcnow
from overture.upstreams import Upstream

log = logging.getLogger("overture")

#: The pool name a relay's events come with: ``upstream:NAME``.
POOL_PREFIX = "upstream:"
_TERMINAL = ("succeeded", "failed", "canceled")
#: ``Prefer: wait`` on create: a short prediction comes back finished in the create's answer,
#: saving a webhook or a poll; a longer one is followed after it.
CREATE_WAIT_SECONDS = 1
#: File inputs up to this size go inline as data: URIs (Replicate advises them up to 256 KB); larger
#: ones are uploaded to the upstream's ``/v1/files``.
DATA_URI_LIMIT = 256 * 1024
#: Polls, for the status and logs until the upstream's webhook brings the end, start this often
#: and back off to ``_MAX_POLL``, or to ``_MAX_POLL_WITH_WEBHOOKS`` once its webhooks are seen to
#: reach this server.
_FIRST_POLL = 0.1
_MAX_POLL = 2.0
_MAX_POLL_WITH_WEBHOOKS = 5.0
_PROGRESS = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")
#: An upstream that gave no webhook secret is asked again this long after.
SECRET_RETRY_SECONDS = 60.0


@dataclass(eq=False)
class _Follow:
    """One relayed prediction, owned by its task on the relay's loop."""

    job: Job
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    upstream_id: str | None = None
    #: The newest state a verified webhook brought, not yet looked at.
    hint: dict[str, Any] | None = None
    cancel_wanted: bool = False
    #: Set with ``cancel_wanted``: ends the waits between the create's tries (a throttled create).
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_sent: bool = False
    started: bool = False
    #: The upstream's log lines already passed on.
    lines: list[str] = field(default_factory=list)
    #: The prediction's ``upstream`` record as last written.
    record: dict[str, Any] = field(default_factory=dict)
    #: Events made before the next report, which sends them first.
    unsent: list[JobEvent] = field(default_factory=list)


class Relay:
    """One upstream, as the transport of every prediction routed to it."""

    def __init__(
        self,
        upstream: Upstream,
        store: Store,
        sink: EventSink,
        webhook_base: str | None,
        timeout_seconds: float,
        limits: DownloadLimits,
    ) -> None:
        self.upstream = upstream
        self.pool = POOL_PREFIX + upstream.name
        self.api = UpstreamAPI(upstream, timeout_seconds, limits)
        self._store = store
        self._sink = sink
        #: Whether the upstream has each version asked for (``owner/name:id``): one it has is sent,
        #: as an Overture upstream has the same version ids for the same models.
        self._has_version: dict[str, bool] = {}
        self._webhook_base = webhook_base
        #: The upstream's webhook signature checker, once its secret is known.
        self._verifier: Webhook | None = None
        #: When the secret may be asked (again): ``loop.time()``; None while it is being asked.
        self._secret_due: float | None = 0.0
        self._secret_task: asyncio.Task[None] | None = None
        #: Whether a verified webhook from the upstream has arrived: it can reach this server.
        self._webhooks_arrive = False
        self._follows: dict[str, _Follow] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{upstream.name}", daemon=True)
        self._thread.start()

    # -- Transport ---------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        self._loop.call_soon_threadsafe(self._begin, job)

    def cancel(self, prediction_id: str) -> None:
        self._loop.call_soon_threadsafe(self._cancel, prediction_id)

    def unload(self, key: str) -> None:
        """Nothing is loaded here."""

    def kill(self, reason: str) -> None:
        """Stop following the predictions whose cancel the upstream has not confirmed in time."""
        self._loop.call_soon_threadsafe(self._abandon_canceled, reason)

    def stop(self) -> None:
        """Stop following; the records stay active, and the next start follows them again."""

        async def close() -> None:
            tasks = [f.task for f in self._follows.values() if f.task is not None]
            tasks += [self._secret_task] if self._secret_task is not None else []
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.api.close()

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            except Exception:  # a follow that would not stop in time: the process is ending anyway
                log.exception("the relay to %s did not stop cleanly", self.api.name)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- the upstream's webhooks -------------------------------------------------------------------

    def webhook_url(self, prediction_id: str) -> str | None:
        if self._webhook_base is None:
            return None
        return f"{self._webhook_base}/v1/upstreams/{self.upstream.name}/predictions/{prediction_id}/webhook"

    def receive(self, prediction_id: str, body: bytes, headers: dict[str, str]) -> bool:
        """A webhook the upstream sent about ``prediction_id``; False when its signature is not
        the upstream's (or its secret is not known yet), and the body is ignored."""
        verifier = self._verifier
        if verifier is None:
            return False
        try:
            state = verifier.verify(body, headers)
        except Exception:  # a bad signature, a missing header, a body that is not JSON: not the upstream's
            return False
        if not isinstance(state, dict):
            return False
        self._loop.call_soon_threadsafe(self._hinted, prediction_id, state)
        return True

    # -- on the loop -------------------------------------------------------------------------------

    def _begin(self, job: Job) -> None:
        follow = _Follow(job)
        self._follows[job.prediction_id] = follow
        follow.task = self._loop.create_task(self._run(follow))
        due = self._secret_due
        if self._webhook_base is not None and due is not None and self._loop.time() >= due:
            self._secret_due = None
            self._secret_task = self._loop.create_task(self._ask_secret())

    def _cancel(self, prediction_id: str) -> None:
        follow = self._follows.get(prediction_id)
        if follow is not None:
            follow.cancel_wanted = True
            follow.stop.set()
            follow.wake.set()

    def _hinted(self, prediction_id: str, state: dict[str, Any]) -> None:
        self._webhooks_arrive = True
        follow = self._follows.get(prediction_id)
        if follow is not None and (follow.upstream_id is None or state.get("id") == follow.upstream_id):
            follow.hint = state
            follow.wake.set()

    def _abandon_canceled(self, reason: str) -> None:
        for follow in list(self._follows.values()):
            if follow.cancel_wanted and follow.task is not None:
                log.warning("%s did not confirm the cancel of %s: %s", self.api.name, follow.job.prediction_id, reason)
                follow.task.cancel()
                self._sink.event(self.pool, Done(follow.job.prediction_id, canceled=True))

    async def _run(self, follow: _Follow) -> None:
        pid = follow.job.prediction_id
        try:
            state = await self._track(follow, await self._reach(follow))
            last = self._report(follow, state)
            try:
                done = await self._finish(follow, state)
            except UpstreamError:
                await self._emit(*last)  # the logs say what it did before its outputs could not come home
                raise
            await self._emit(*last, done)  # the last logs and the end, in one hop to the engine
        except UpstreamCanceled:  # canceled before the upstream accepted it: nothing runs there
            await self._emit(Done(pid, canceled=True))
        except UpstreamError as exc:
            # The engine decides: run it here (a burst route the upstream never accepted) or fail it with this.
            why = WorkerLost(str(exc), retryable=False, accepted_upstream=follow.upstream_id is not None)
            await asyncio.to_thread(self._sink.lost, self.pool, [pid], why)
        except Exception as exc:
            log.exception("relaying %s to %s failed", pid, self.api.name, extra={"prediction_id": pid})
            await self._emit(Done(pid, error=f"Relaying to {self.api.name} failed: {type(exc).__name__}: {exc}"))
        finally:
            if self._follows.get(pid) is follow:
                del self._follows[pid]

    async def _reach(self, follow: _Follow) -> dict[str, Any]:
        """The upstream prediction: created now, or found again after a restart."""
        pid = follow.job.prediction_id
        row = await asyncio.to_thread(self._store.prediction, pid)
        if row is None:
            raise UpstreamError(f"prediction {pid} is not in the records")
        record = follow.record = dict(row.upstream or {})
        if record.get("id"):  # followed by an earlier process
            follow.upstream_id = str(record["id"])
            state = await self.api.get(follow.upstream_id)
            follow.lines = _already_passed((row.logs or "").splitlines(), _whole_lines(str(state.get("logs") or "")))
            return state
        webhook = self.webhook_url(pid)
        if record.get("state") == "creating":
            # An earlier process sent the create and stopped before its answer was written.
            since = (moment(record.get("created_at")) or utcnow()) - timedelta(minutes=1)
            found = await self.api.find(f"/predictions/{pid}/webhook", since) if webhook else None
            if found is not None:
                return await self._created(follow, record, found)
        else:
            record = {"name": self.upstream.name, "state": "creating", "key": pid, "created_at": utcnow().isoformat()}
            follow.record = record
            await self._write(pid, record)  # before the call: a restart after it finds the prediction again
        inputs = await self._inputs(follow, row.input or {})
        version = row.version if await self._upstream_has(row.model, row.version) else None
        record["pinned"] = version is not None
        key = str(record["key"])
        created = await self.api.create(row.model, version, inputs, webhook, key, CREATE_WAIT_SECONDS, follow.stop)
        return await self._created(follow, record, created)

    async def _created(self, follow: _Follow, record: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(state.get("id"), str):
            raise UpstreamRefused(f"{self.api.name} answered the create without a prediction id")
        follow.upstream_id = state["id"]
        record |= {"state": "following", "id": state["id"], "urls": state.get("urls")}
        if state.get("status") not in _TERMINAL:
            # A create answered finished (``Prefer: wait``) is written once, with its end; until
            # then a restart finds it again by its key and marker.
            await self._write(follow.job.prediction_id, record)
        line = f"Relayed to {self.upstream.name} as prediction {state['id']}."
        follow.unsent.append(Log(follow.job.prediction_id, line))
        return state

    async def _track(self, follow: _Follow, state: dict[str, Any]) -> dict[str, Any]:
        """Pass on what the upstream reports until it ends; the final state, not yet reported."""
        assert follow.upstream_id is not None
        interval = _FIRST_POLL
        while True:
            if state.get("status") in _TERMINAL:
                return state
            await self._emit(*self._report(follow, state))
            if follow.cancel_wanted and not follow.cancel_sent:
                follow.cancel_sent = True
                state = await self.api.cancel(follow.upstream_id)
                continue
            follow.wake.clear()
            try:
                await asyncio.wait_for(follow.wake.wait(), interval)
            except TimeoutError:
                interval = min(_MAX_POLL_WITH_WEBHOOKS if self._webhooks_arrive else _MAX_POLL, interval * 2)
            if follow.hint is not None:
                state, follow.hint = follow.hint, None
            elif not (follow.cancel_wanted and not follow.cancel_sent):
                state = await self.api.get(follow.upstream_id)

    def _report(self, follow: _Follow, state: dict[str, Any]) -> list[JobEvent]:
        """The events for what is new in ``state``."""
        pid = follow.job.prediction_id
        events, follow.unsent = follow.unsent, []
        if not follow.started and state.get("status") == "processing":
            # One first seen finished (``Prefer: wait``) goes straight to its end: a record write fewer.
            follow.started = True
            events.append(Started(pid))
        return events + _log_events(pid, follow.lines, str(state.get("logs") or ""))

    async def _finish(self, follow: _Follow, state: dict[str, Any]) -> Done:
        pid = follow.job.prediction_id
        metrics = state.get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
        # The upstream's own URLs, output URLs included, are kept only as metadata: they expire.
        keep = ("id", "status", "model", "version", "urls", "output", "error", "metrics", "data_removed")
        record = follow.record | {key: state.get(key) for key in keep} | {"state": "ended"}
        seconds = metrics.get("predict_time")
        hardware = state.get("hardware") or metrics.get("hardware")
        ended = Done(
            pid,
            predict_time=float(seconds) if isinstance(seconds, int | float) else None,
            hardware=str(hardware) if hardware else None,
            record=record,
        )
        status = state.get("status")
        if status == Status.CANCELED:
            return replace(ended, canceled=True)
        if status == Status.FAILED:
            return replace(ended, error=str(state.get("error") or f"The prediction failed on {self.api.name}."))
        if state.get("data_removed") and state.get("output") is None:
            return replace(ended, error=f"{self.api.name} removed the output before it could be fetched.")
        return replace(ended, output=await self._bring_home(state.get("output"), follow.job.scratch, set()))

    async def _bring_home(self, value: Any, scratch: Path, taken: set[str]) -> Any:
        """The output with each file URL replaced by the file, downloaded into ``scratch``."""
        if isinstance(value, str) and _is_file_url(value):
            scratch.mkdir(parents=True, exist_ok=True)
            return await self.api.download(value, scratch / _file_name(value, taken))
        if isinstance(value, list):
            return [await self._bring_home(item, scratch, taken) for item in value]
        if isinstance(value, dict):
            return {key: await self._bring_home(item, scratch, taken) for key, item in value.items()}
        return value

    async def _inputs(self, follow: _Follow, raw: dict[str, Any]) -> dict[str, Any]:
        """What the client sent, with each file input (a local file by now) as the upstream can
        read it: a data: URI when small, else uploaded to its ``/v1/files``."""
        inputs = {}
        for key, value in raw.items():
            local = follow.job.inputs.get(key)
            inputs[key] = await self._file_input(local, follow.stop) if isinstance(local, Path) else value
        return inputs

    async def _file_input(self, path: Path, stop: asyncio.Event) -> str:
        if path.stat().st_size <= DATA_URI_LIMIT:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"
        return await self.api.upload(path, stop)

    async def _ask_secret(self) -> None:
        """The upstream's webhook signing secret, asked once briefly, in the background: until it
        is known the upstream's webhooks are refused and polling follows the predictions, and an
        upstream that gave none is asked again ``SECRET_RETRY_SECONDS`` later."""
        try:
            self._verifier = Webhook(await self.api.webhook_secret())
        except Exception as exc:  # unreachable, refused, or a secret that is not one (not base64)
            log.warning("%s: no webhook secret (%s); following its predictions by polling", self.api.name, exc)
            self._secret_due = self._loop.time() + SECRET_RETRY_SECONDS

    async def _upstream_has(self, model: str, version: str) -> bool:
        """Whether the upstream runs ``version`` of ``model``; one it does not (api.replicate.com
        knows none of this server's own ids) runs as the upstream's latest version of the model."""
        ref = f"{model}:{version}"
        if ref not in self._has_version:
            self._has_version[ref] = await self.api.has_version(model, version)
        return self._has_version[ref]

    async def _write(self, pid: str, record: dict[str, Any]) -> None:
        await asyncio.to_thread(self._store.transition, pid, list(Status), upstream=record)

    async def _emit(self, *events: JobEvent) -> None:
        """Hand events to the engine in order, off the loop: recording them writes the database."""

        def deliver() -> None:
            for event in events:
                self._sink.event(self.pool, event)

        if events:
            await asyncio.to_thread(deliver)


def _log_events(pid: str, lines: list[str], text: str) -> list[JobEvent]:
    """The upstream's whole log text as events for what is new since ``lines`` (updated): new
    lines as ``Log``, progress bars as ``Progress``, so that a bar the upstream rewrites in place
    stays one line here too."""
    current = _whole_lines(text)
    if current[: len(lines)] == lines:
        new = current[len(lines) :]
    elif lines and current[: len(lines) - 1] == lines[:-1]:
        new = current[len(lines) - 1 :]  # the last line was rewritten: a progress bar moved
    else:
        return []  # an older state than one already seen (webhooks can cross)
    lines[:] = current
    events: list[JobEvent] = []
    for line in new:
        match = _PROGRESS.search(line)
        events.append(Progress(pid, int(match[1]), int(match[2])) if match else Log(pid, line))
    return events


def _whole_lines(text: str) -> list[str]:
    """The log's finished lines: an unfinished last line waits for its end."""
    current = text.splitlines()
    return current[:-1] if current and not text.endswith("\n") else current


def _already_passed(recorded: list[str], current: list[str]) -> list[str]:
    """The first of the upstream's ``current`` lines that the prediction's recorded log already
    holds, in order, among this server's own lines (a restart's, the relay's): an earlier process
    passed them on, and they are not passed on again. A progress bar matches any bar, as this
    server draws its own."""
    passed = 0
    for line in recorded:
        if passed == len(current):
            break
        upstream = current[passed]
        if line == upstream or (_PROGRESS.search(upstream) and _PROGRESS.search(line)):
            passed += 1
    return current[:passed]


def _is_file_url(value: str) -> bool:
    """Whether an output string names a file to bring home. Replicate's outputs name their files
    by URL, alone in their string: one whole http(s) URL with a host, or a data: URI. Any other
    string (text that starts with "http", a URL inside a sentence) is output as it is."""
    if value.startswith("data:"):
        return re.fullmatch(r"data:[^,\s]*,\S*", value) is not None
    if any(c.isspace() for c in value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError for a port that is not one
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _file_name(url: str, taken: set[str]) -> str:
    """A safe, unique name for a downloaded output, from its URL's last path segment."""
    if url.startswith("data:"):
        kind = url[5:].partition(";")[0].partition(",")[0]
        base = "output" + (mimetypes.guess_extension(kind) or "")
    else:
        base = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or "output"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100] or "output"
    name, index = base, 1
    while name in taken:
        index += 1
        name = f"{index}-{base}"
    taken.add(name)
    return name
