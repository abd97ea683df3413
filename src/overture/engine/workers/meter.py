"""What a worker measures of its pool for ``/metrics``: a continuous batch's rows and decoder steps
per second, and the GPU memory its process holds.

The loop steps many times a second; a message per step would cost the pipe more than the figures
are worth, so they are summed here and reported at most once per ``interval``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from overture.engine.workers.protocol import BatchStats, DeviceMemory, PoolReport

#: Seconds between two reports; Prometheus scrapes every 15 s or so, a second is plenty.
REPORT_SECONDS = 1.0


def device_memory() -> list[DeviceMemory]:
    """The GPU memory this process holds, per device it holds any on; nothing where CUDA was never
    used here (a CPU-only worker reports no GPU at all, rather than zeros)."""
    torch = sys.modules.get("torch")  # a pool that never imported torch used no GPU
    if torch is None or not torch.cuda.is_initialized():
        return []
    held = []
    for index in range(torch.cuda.device_count()):
        reserved = torch.cuda.memory_reserved(index)
        if reserved:
            held.append(DeviceMemory(f"cuda:{index}", torch.cuda.memory_allocated(index), reserved))
    return held


class PoolMeter:
    def __init__(
        self,
        emit: Callable[[PoolReport], None],
        interval: float = REPORT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._steps = 0
        self._rows = 0
        #: Whether the last batch report had rows, so an emptied loop is reported once as empty.
        self._reported_rows = False

    def stepped(self, rows: int) -> None:
        """The loop made one decoder step over ``rows`` predictions."""
        with self._lock:
            self._steps += 1
            self._rows = rows
            reports = self._due()
        self._send(reports)

    def idle(self) -> None:
        """The loop has emptied: its figures go to zero now, not at the next step."""
        with self._lock:
            if not self._reported_rows:
                return
            self._reported_rows = False
            self._steps = self._rows = 0
            self._since = self._clock()
        self._send([BatchStats(0, 0.0), *device_memory()])

    def job_done(self) -> None:
        """A job ended: the GPU memory it held may have changed."""
        with self._lock:
            reports = self._due()
        self._send(reports)

    def _due(self) -> list[PoolReport]:
        """The reports to send now (lock held), if an interval has passed since the last."""
        now = self._clock()
        elapsed = now - self._since
        if elapsed < self._interval:
            return []
        reports: list[PoolReport] = []
        if self._steps:
            reports.append(BatchStats(self._rows, self._steps / elapsed))
            self._reported_rows = self._rows > 0
        self._since, self._steps = now, 0
        return reports + list(device_memory())

    def _send(self, reports: list[PoolReport]) -> None:
        for report in reports:
            self._emit(report)
