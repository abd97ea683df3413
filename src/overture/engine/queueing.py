"""What the engine knows of predictions that wait for their model: how many each owner has queued
(``--max-queued-per-token``), and where each stands in line, as its worker last reported.

Both live in memory only. A position changes at every start ahead of it; writing each move to the
database would cost a write per queued prediction per start, so the API reads them from here.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from overture.errors import TooManyQueued


@dataclass(frozen=True)
class QueueSpot:
    """A queued prediction's place: ``position`` 1 starts next, of ``length`` waiting."""

    position: int
    length: int
    #: ``time.monotonic()`` when it should start; None before its model has finished a run.
    starts_at: float | None

    def line(self) -> str:
        """Its log line while it waits, with the estimate counted down to now."""
        text = f"Waiting in the queue: position {self.position} of {self.length}"
        if self.starts_at is None:
            return f"{text}; no estimate of the start yet (the model has not finished a run recently)"
        seconds = math.ceil(self.starts_at - time.monotonic())
        return f"{text}; estimated start in about {seconds} s" if seconds > 0 else f"{text}; starting any moment"


class QueuedCounts:
    """Each owner's predictions created and not yet started, against a cap (0: none)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._queued: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add(self, owner: str, pid: str, capped: bool = True) -> None:
        """Count ``pid`` in, or raise ``TooManyQueued`` when ``capped`` and the owner is at the cap."""
        with self._lock:
            mine = self._queued.setdefault(owner, set())
            if capped and self.cap and len(mine) >= self.cap:
                raise TooManyQueued(
                    f"This token already has {len(mine)} predictions waiting to start, the server's limit "
                    f"(--max-queued-per-token {self.cap}). Wait for some to start, or cancel some, and try again."
                )
            mine.add(pid)

    def remove(self, owner: str, pid: str) -> None:
        """``pid`` started or ended."""
        with self._lock:
            mine = self._queued.get(owner)
            if mine is not None:
                mine.discard(pid)
                if not mine:
                    del self._queued[owner]
