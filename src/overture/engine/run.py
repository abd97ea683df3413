"""One active prediction's state, owned by one object from create until its job is over."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from overture.engine.queueing import QueueSpot
from overture.engine.webhooks import WebhookSubscription
from overture.engine.workers.protocol import Job
from overture.models.base import Version

_PROGRESS_BAR_WIDTH = 10


@dataclass(eq=False)
class PredictionRun:
    id: str
    owner: str
    #: The model's ``owner/name``, as metrics label it.
    model: str
    #: Looked up once, at create or recovery.
    version: Version
    #: Validated input; file fields hold the URLs the client sent until ``job`` resolves them.
    values: dict[str, Any]
    logs: LogBuffer
    webhook: WebhookSubscription | None = None
    #: Someone wants partial outputs: a stream was requested, or an ``output`` webhook.
    stream: bool = False
    #: Set once the inputs are local files, before the job goes to a worker.
    job: Job | None = None
    cache_key: str | None = None
    started_at: datetime | None = None
    #: 1, then one more each time a worker died running it before it produced any output.
    attempt: int = 1
    produced_output: bool = False
    #: A worker holds the job: its ``Done`` (or the worker's loss) is still to come.
    in_worker: bool = False
    #: The worker holding the job has started it (its ``Started`` came): only then does the
    #: worker's loss use up an attempt; a job lost while still queued is sent again for free.
    started_in_worker: bool = False
    #: The record is terminal; a worker may still be finishing the job.
    finished: bool = False
    #: ``time.monotonic()`` when the worker was told to cancel; it has a grace period to stop.
    cancel_sent_at: float | None = None
    #: Its place in its pool's queue until it starts, as the worker last reported it.
    queue: QueueSpot | None = None
    #: ``time.monotonic()`` when it joined its queue (created, recovered or restarted), for metrics.
    queued_at: float = field(default_factory=time.monotonic)
    #: Where it runs: "local", or the name of the upstream it is relayed to (``Router.route``).
    provider: str = "local"

    @property
    def pool(self) -> str:
        """Versions in one pool share a worker, its queue and one predictor instance."""
        return self.version.predictor.pool or self.version.id


@dataclass
class LogBuffer:
    """A prediction's log lines as the record shows them, and those not yet written there.

    A progress bar rewrites its own line, as a terminal would, instead of piling up lines."""

    #: Unwritten lines wait at most this long before they reach the record.
    FLUSH_INTERVAL = 0.25

    lines: list[str] = field(default_factory=list)
    _new: list[str] = field(default_factory=list)
    _progress_line: bool = False
    _flushed_at: float = field(default_factory=time.monotonic)
    _started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_text(cls, text: str) -> LogBuffer:
        """A run after a restart keeps what the earlier attempt logged."""
        return cls(lines=text.splitlines())

    def restart_clock(self) -> None:
        """Progress rates count from the start of the model's run."""
        self._started = time.monotonic()

    def append(self, text: str) -> None:
        lines = text.split("\n")
        with self._lock:
            self.lines.extend(lines)
            self._new.extend(lines)
            self._progress_line = False

    def progress(self, done: int, total: int) -> None:
        line = _progress_line(done, total, time.monotonic() - self._started)
        with self._lock:
            if self._progress_line:
                self.lines[-1] = line
                if self._new:
                    self._new[-1] = line
                else:
                    self._new.append(line)
            else:
                self.lines.append(line)
                self._new.append(line)
            self._progress_line = True

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(line + "\n" for line in self.lines)

    def due(self) -> bool:
        """Whether unwritten lines have waited long enough to be written."""
        return bool(self._new) and time.monotonic() - self._flushed_at >= self.FLUSH_INTERVAL

    def take(self) -> tuple[str, str]:
        """The whole text and the part not yet written, which the caller now writes."""
        with self._lock:
            new = "".join(line + "\n" for line in self._new)
            self._new = []
            self._flushed_at = time.monotonic()
            return "".join(line + "\n" for line in self.lines), new


def _progress_line(done: int, total: int, elapsed: float) -> str:
    total = max(total, 1)
    done = min(done, total)
    filled = round(_PROGRESS_BAR_WIDTH * done / total)
    bar = "█" * filled + " " * (_PROGRESS_BAR_WIDTH - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{round(100 * done / total):3d}%|{bar}| {done}/{total} [{_clock(elapsed)}, {rate:.2f}it/s]"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"
