"""Where each queued job of a pool stands, told to the engine as it changes.

The worker knows the order its queue will serve (owners take turns, see queue.py), so it reports
the positions; the engine only shows them. One ``QueuePositions`` event carries the whole order,
at most every ``REPORT_SECONDS`` however fast jobs come and go: a queue of 500 moving at every
start costs one small message per interval, not 500 per start.

The estimate of a wait comes from the pool's recent run times: a place in line is worth a mean
run time shared by the jobs running side by side (a batch, or several worker threads).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from overture.engine.workers.protocol import QueuePositions
from overture.engine.workers.queue import JobQueue

#: The most often a pool reports its queue's order.
REPORT_SECONDS = 0.5
#: How many of the latest runs the estimate averages.
RECENT_RUNS = 20


class PositionReporter:
    """Sends the queue's order whenever it changed, from a thread of its own started on first use."""

    def __init__(
        self,
        queue: JobQueue,
        emit: Callable[[QueuePositions], None],
        running: Callable[[], int],
        interval: float = REPORT_SECONDS,
    ):
        self._queue = queue
        self._emit = emit
        self._running = running
        self._interval = interval
        self._run_times: deque[float] = deque(maxlen=RECENT_RUNS)
        self._changed = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def changed(self) -> None:
        """The queue gained or lost a job: report its order soon."""
        self._changed.set()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._report, name="queue-positions", daemon=True)
                self._thread.start()

    def ran(self, seconds: float) -> None:
        """A job of the pool finished after running this long."""
        self._run_times.append(seconds)

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()

    def _report(self) -> None:
        while True:
            self._changed.wait()
            if self._stopped.is_set():
                return
            self._changed.clear()
            self._emit(QueuePositions(tuple(self._queue.order()), self._seconds_per_place()))
            # However often the queue changes, the next report waits this long.
            if self._stopped.wait(self._interval):
                return

    def _seconds_per_place(self) -> float | None:
        times = list(self._run_times)
        if not times:
            return None
        return sum(times) / len(times) / max(1, self._running())
