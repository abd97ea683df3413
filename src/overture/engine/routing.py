"""Where each prediction runs: on this server's own workers, or relayed to an upstream.

``Router.route`` is the one place that decides a prediction goes upstream. It is called as the
prediction is created (``Engine.create``, before its record is written), so a check that must
refuse upstream runs (a spending cap, say) belongs there: what it raises is the create's answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from overture.errors import OverBudget
from overture.upstreams import LOCAL_PROVIDER as LOCAL
from overture.upstreams import Route

_LOCAL_ROUTE = Route("local")
#: Weight of the newest run in a pool's average run time.
_SMOOTHING = 0.3


@dataclass(frozen=True)
class LocalLoad:
    """What a new prediction would wait behind on this server: its pool's unfinished local
    predictions, how many the pool runs side by side, and the pool's name for its run times."""

    pool: str
    ahead: int
    side_by_side: int


class Router:
    def __init__(self, routes: dict[str, Route], burst_after_seconds: float, admit: Callable[[str], None]) -> None:
        self.routes = routes
        #: Raises ``OverBudget`` (a 402) for an owner whose upstream spending has reached its cap.
        self._admit = admit
        self.burst_after_seconds = burst_after_seconds
        self._run_seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def route_of(self, model: str, version: str) -> Route:
        """The configured route: the version's (``owner/name:id``) first, then the model's."""
        return self.routes.get(f"{model}:{version}") or self.routes.get(model) or _LOCAL_ROUTE

    def route(self, owner: str, model: str, version: str, load: LocalLoad) -> str:
        """Where a prediction of ``owner`` runs now: ``local`` or the name of an upstream. A burst
        route sends it upstream when its wait here, estimated from the predictions ahead of it and
        the pool's recent run times, would pass ``--burst-after``.

        An owner over its spending cap is refused (``OverBudget``) on an upstream route; on a burst
        route its prediction stays here and waits."""
        route = self.route_of(model, version)
        if route.kind == "upstream":
            self._admit(owner)
            return str(route.upstream)
        if route.kind == "burst" and self.local_wait(load) > self.burst_after_seconds:
            try:
                self._admit(owner)
            except OverBudget:
                return LOCAL
            return str(route.upstream)
        return LOCAL

    def may_fall_back(self, model: str, version: str) -> bool:
        """Whether a prediction its upstream failed may run here instead: on a burst route only."""
        return self.route_of(model, version).kind == "burst"

    def local_wait(self, load: LocalLoad) -> float:
        """Seconds a new prediction would wait here; 0 until the pool has finished a run."""
        with self._lock:
            seconds = self._run_seconds.get(load.pool)
        if seconds is None:
            return 0.0
        # Those ahead beyond the ones running side by side each add a share of a run.
        return max(0, load.ahead - load.side_by_side + 1) * seconds / max(1, load.side_by_side)

    def ran(self, pool: str, seconds: float) -> None:
        """A local run of ``pool`` took ``seconds``: its average moves toward it."""
        with self._lock:
            before = self._run_seconds.get(pool)
            self._run_seconds[pool] = seconds if before is None else before + _SMOOTHING * (seconds - before)
