"""The engine's background chores on one thread: each runs at its own interval, and a failing one
(the data directory full or read-only) is tried again at its next turn."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("overture")


@dataclass
class Chore:
    name: str
    interval: float
    run: Callable[[], None]
    next_at: float = 0.0


class Housekeeper:
    #: How often the thread wakes to see which chores are due.
    TICK_SECONDS = 0.25

    def __init__(self, chores: list[Chore]):
        self.chores = chores
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(self.TICK_SECONDS):
            for chore in self.chores:
                if time.monotonic() < chore.next_at:
                    continue
                try:
                    chore.run()
                except Exception:
                    log.exception("housekeeping: %s failed", chore.name)
                chore.next_at = time.monotonic() + chore.interval
