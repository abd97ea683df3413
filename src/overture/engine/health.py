"""Cog's health states (``GET /health``), mapped onto what Overture is doing.

Cog serves one model in one process; Overture serves several, each in a pool of its own, so:

* ``STARTING``: the engine has not yet started, nor brought back what an earlier process left.
* ``DEFUNCT``: the engine cannot work: its database refuses writes (read-only, full, gone).
* ``SETUP_FAILED``: some model's worker could not import its code or set its predictor up; the
  other models still serve, and the reason names the failed ones. A later successful setup of
  that pool clears it.
* ``BUSY``: a prediction is waiting for a worker, or every pool in use is at capacity.
* ``READY``: otherwise.

Listed from the most to the least severe: a state shows when no state above it holds.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from overture.engine.run import PredictionRun
from overture.models.base import ContinuousPredictor


class HealthStatus(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    SETUP_FAILED = "SETUP_FAILED"
    DEFUNCT = "DEFUNCT"


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    #: Why, for a person: None when READY.
    reason: str | None = None


class HealthMonitor:
    def __init__(self, check_database: Callable[[], None]):
        #: Raises when the database cannot be written.
        self._check_database = check_database
        self._started = False
        #: Pools whose setup failed, and the error.
        self._setup_failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def started(self) -> None:
        """The engine has started and recovered what an earlier process left."""
        self._started = True

    def setup(self, pool: str, error: str | None) -> None:
        """A pool's setup ended: ``error`` when it failed, None when it succeeded."""
        with self._lock:
            if error is None:
                self._setup_failures.pop(pool, None)
            else:
                self._setup_failures[pool] = error

    def check(self, runs: Iterable[PredictionRun], pools: Iterable[str]) -> Health:
        """The state now, from the engine's unfinished ``runs`` and the ``pools`` it has started."""
        if not self._started:
            return Health(HealthStatus.STARTING, "The engine is starting and resuming unfinished predictions.")
        try:
            self._check_database()
        except Exception as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            return Health(HealthStatus.DEFUNCT, f"The database cannot be written: {type(exc).__name__}: {first_line}")
        with self._lock:
            failures = dict(self._setup_failures)
        if failures:
            listed = "; ".join(f"{pool}: {error}" for pool, error in sorted(failures.items()))
            return Health(HealthStatus.SETUP_FAILED, f"Some models could not be set up: {listed}")
        return _load(list(runs), list(pools))


def _load(runs: list[PredictionRun], pools: list[str]) -> Health:
    waiting = sum(run.started_at is None for run in runs)
    if waiting:
        return Health(HealthStatus.BUSY, f"{waiting} prediction(s) waiting for a worker.")
    running = Counter(run.pool for run in runs)
    predictors = {run.pool: run.version.predictor for run in runs}
    # A pool's worker threads each run one prediction (or one batch, taken whole when it starts), so
    # with as many running as threads a new one waits. A continuous loop admits whatever fits
    # (has_room, decided in its worker): only a waiting prediction shows it full.
    full = [
        pool
        for pool in pools
        if pool in predictors
        and not issubclass(predictors[pool], ContinuousPredictor)
        and running[pool] >= predictors[pool].concurrency
    ]
    if pools and len(full) == len(pools):
        return Health(HealthStatus.BUSY, f"Every model worker is at capacity: {', '.join(sorted(full))}.")
    return Health(HealthStatus.READY)
