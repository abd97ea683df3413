"""Recording a prediction's changes and fanning them out.

Every change is one conditional write (the status must still be what the change expects, so a
race has one winner) that stores the stream's events in the same transaction. After it, waiters
and streams are woken and the prediction's webhook subscription gets the event if it wants it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from overture.engine.notify import Notifier
from overture.engine.run import PredictionRun
from overture.engine.telemetry import Telemetry
from overture.engine.webhooks import WebhookDispatcher
from overture.status import ACTIVE, Status
from overture.store.db import PredictionRow
from overture.store.store import Store, utcnow

log = logging.getLogger("overture")


class Recorder:
    def __init__(
        self, store: Store, notifier: Notifier, webhooks: WebhookDispatcher, telemetry: Telemetry | None = None
    ):
        self.store = store
        self.notifier = notifier
        self.webhooks = webhooks
        #: None with ``--no-metrics``.
        self.telemetry = telemetry

    def started(self, run: PredictionRun) -> bool:
        """Mark the prediction processing; False when it ended first (canceled)."""
        now = utcnow()
        if not self.store.transition(run.id, [Status.STARTING], status=Status.PROCESSING, started_at=now):
            return False
        run.started_at = now
        run.logs.restart_clock()
        if self.telemetry is not None:
            self.telemetry.started(run.model, time.monotonic() - run.queued_at)
        self._changed(run, "start")
        return True

    def flush(self, run: PredictionRun) -> None:
        """Write the log lines not yet in the record."""
        text, new = run.logs.take()
        if new and self.store.transition(run.id, [Status.PROCESSING], events=[("logs", new)], logs=text):
            self._changed(run, "logs")

    def partial(self, run: PredictionRun, value: Any) -> None:
        """Publish output ready before the end; the logs written before it come first."""
        self.flush(run)
        output = self.publish(run.id, value)
        run.produced_output = True
        if self.store.transition(run.id, [Status.PROCESSING], events=[("output", output)]):
            self._changed(run, "output")

    def complete(self, run: PredictionRun, status: Status, last_line: str = "", **values: Any) -> bool:
        """Move to a terminal status with ``completed_at`` and ``predict_time``, unless already
        terminal; end the stream (``error``, then ``done``) and send the ``completed`` webhook.
        The logs' unwritten lines and ``last_line`` go in the same transaction: a prediction
        that finished first never gets that line."""
        if last_line:
            run.logs.append(last_line)
        text, new = run.logs.take()
        events: list[tuple[str, Any]] = [("logs", new)] if new else []
        if status == Status.SUCCEEDED and not run.produced_output and values.get("output") is not None:
            # Nothing was streamed before (a model that does not stream, an answer from the cache):
            # the whole output is the stream's output event, or a stream's reader would get none.
            events.append(("output", values["output"]))
        if status == Status.FAILED:
            events.append(("error", values["error"]))
        reason = {} if status == Status.SUCCEEDED else {"reason": "error" if status == Status.FAILED else str(status)}
        events.append(("done", reason))
        now = utcnow()
        started_at = values.get("started_at", run.started_at)
        values.update(status=status, logs=text, completed_at=now)
        # A provider that ran it elsewhere measured its own time; else it is timed here.
        values.setdefault("predict_time", _seconds(started_at, now))
        webhook = run.webhook
        if webhook is not None and webhook.wants("completed"):
            # The delivery is written with the status: a crash between two commits would lose it.
            ok = self.store.transition_then_add(
                run.id, ACTIVE, lambda row: self.webhooks.delivery(webhook, row, "completed"), events, **values
            )
        else:
            ok = self.store.transition(run.id, ACTIVE, events=events, **values)
        if ok:
            run.finished = True
            self.notifier.notify(run.id)
            self.webhooks.wake()
            self._ended(run.id, run.model, status, values["predict_time"])
        return ok

    def restarted(self, run: PredictionRun, notice: str) -> bool:
        """Back to ``starting`` for another attempt, ``notice`` in the logs; False when it ended."""
        run.logs.append(notice)
        text, new = run.logs.take()
        ok = self.store.transition(
            run.id, ACTIVE, events=[("logs", new)], status=Status.STARTING, started_at=None, logs=text
        )
        if ok:
            run.started_at = None
            run.queued_at = time.monotonic()
            self._changed(run, "logs")
        return ok

    def unresumable(self, row: PredictionRow, error: str) -> None:
        """Fail a prediction left by an earlier process that can no longer run (its model is gone)."""
        events: list[tuple[str, Any]] = [("error", error), ("done", {"reason": "error"})]
        values = {"status": Status.FAILED, "error": error, "completed_at": utcnow()}
        webhook = self.webhooks.subscription(row.owner, row.webhook, row.webhook_events_filter) if row.webhook else None
        if webhook is not None and webhook.wants("completed"):
            self.store.transition_then_add(
                row.id, ACTIVE, lambda ended: self.webhooks.delivery(webhook, ended, "completed"), events, **values
            )
        else:
            self.store.transition(row.id, ACTIVE, events=events, **values)
        self.notifier.notify(row.id)
        self.webhooks.wake()
        self._ended(row.id, row.model, Status.FAILED, None)

    def _ended(self, pid: str, model: str, status: Status, predict_time: float | None) -> None:
        """One line in the server's log and one count in its metrics for each finished prediction."""
        took = "" if predict_time is None else f" after {predict_time:.3f} s"
        log.info("prediction %s%s", status, took, extra={"prediction_id": pid, "model": model})
        if self.telemetry is not None:
            self.telemetry.finished(model, status, predict_time)

    def publish(self, pid: str, value: Any) -> Any:
        """Output as stored JSON: files moved into the prediction's outputs, numpy made plain."""
        if isinstance(value, Path):
            return self.store.publish_output(pid, value)
        if isinstance(value, dict):
            return {str(k): self.publish(pid, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.publish(pid, v) for v in value]
        if isinstance(value, np.generic | np.ndarray):
            return value.tolist()
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise TypeError(f"the model returned a value that is not JSON: {type(value).__name__}")

    def _changed(self, run: PredictionRun, event: str) -> None:
        """Wake waiters and streams; queue the webhook event if the prediction asked for it."""
        self.notifier.notify(run.id)
        if run.webhook is None or not run.webhook.wants(event):
            return
        row = self.store.prediction(run.id)
        if row is not None:
            self.webhooks.enqueue(run.webhook, row, event)


def _seconds(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else round((end - start).total_seconds(), 6)
