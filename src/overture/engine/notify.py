"""Wakes asyncio waiters (``Prefer: wait``, streams) when a worker thread changes a prediction."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = defaultdict(set)

    def subscribe(self, pid: str) -> asyncio.Future[None]:
        """A future resolved at the next change of ``pid``; subscribe before reading state to miss nothing."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters[pid].add((loop, future))
        return future

    def unsubscribe(self, pid: str, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(pid)
            if waiters is not None:
                waiters.discard((future.get_loop(), future))
                if not waiters:
                    del self._waiters[pid]

    def notify(self, pid: str) -> None:
        with self._lock:
            waiters = self._waiters.pop(pid, set())
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the waiter's loop has closed; nobody is waiting any more
                pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
