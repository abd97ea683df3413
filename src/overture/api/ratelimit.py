"""Per-token rate limits, as Replicate publishes them: 600 prediction creates and 3,000 other
requests a minute by default.

Each token's admitted requests are kept as a sliding log of their times, one log for creates and
one for the rest: a request is admitted while fewer than the limit were admitted in the last
window. A log, rather than a token bucket, because it means exactly what Replicate's documents
say ("600 a minute": never a 601st within any 60 s) and tells a throttled client exactly when
room opens, the moment its oldest request leaves the window, which ``Retry-After`` carries. It
costs a deque append and the pops of what expired per request, and at most ``limit`` floats per
token. A refused request is not logged, so a client retrying in a loop does not lock itself out.

The real client retries a throttled GET after ``Retry-After`` (whole seconds only; it ignores
fractions) and surfaces a throttled POST as a ``ReplicateError``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from overture.api.errors import ApiError
from overture.config import Settings


class RateLimiter:
    def __init__(self, creates: int, requests: int, window: float, clock: Callable[[], float] = time.monotonic):
        self._limits = {True: creates, False: requests}
        self._window = window
        self._clock = clock
        self._admitted: dict[tuple[str, bool], deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """None when both limits are off, so a request pays nothing for them."""
        if settings.rate_limit_creates <= 0 and settings.rate_limit_requests <= 0:
            return None
        return cls(settings.rate_limit_creates, settings.rate_limit_requests, settings.rate_limit_window_seconds)

    def admit(self, owner: str, method: str, path: str) -> None:
        """Count the request in, or raise a 429 ``ApiError`` saying when to try again."""
        create = method == "POST" and path.endswith("/predictions")
        limit = self._limits[create]
        if limit <= 0:
            return
        now = self._clock()
        with self._lock:
            admitted = self._admitted.setdefault((owner, create), deque())
            while admitted and admitted[0] <= now - self._window:
                admitted.popleft()
            if len(admitted) < limit:
                admitted.append(now)
                return
            wait = admitted[0] + self._window - now
        seconds = max(1, math.ceil(wait))
        what = "prediction creates" if create else "requests other than prediction creates"
        raise ApiError(
            429,
            f"Request was throttled. Expected available in {seconds} second{'s' if seconds != 1 else ''}. "
            f"This server allows each token {limit} {what} per {self._window:g} seconds.",
            headers={"Retry-After": str(seconds)},
        )
