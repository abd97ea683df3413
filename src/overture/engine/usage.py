"""What predictions cost: the price table, usage reports over a period, and the per-token budget on
upstream predictions (docs/usage.md).

Costs are estimates: the server knows how long a provider says a prediction ran (``predict_time``)
and, where it says so, on what hardware; the price table (overture/prices.py) turns that into dollars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from overture.errors import OverBudget
from overture.prices import CURRENCY, Period, Prices, UsageGroup
from overture.store.store import Store, utcnow

if TYPE_CHECKING:
    from overture.config import Settings

# -- reports ------------------------------------------------------------------------------------

#: What a report can be grouped by: prediction fields, ``owner`` being the token's name.
GROUP_FIELDS = ("model", "provider", "owner", "hardware")
DEFAULT_GROUPING = ("model", "provider")


@dataclass
class UsageLine:
    """Usage of one group of a report (or its total, with no key)."""

    key: dict[str, str | None]
    predictions: int = 0
    predict_time: float = 0.0
    cost: float = 0.0
    unpriced: int = 0

    def add(self, group: UsageGroup, prices: Prices) -> None:
        cost, unpriced = prices.cost(group)
        self.predictions += group.predictions
        self.predict_time += group.predict_time
        self.cost += cost
        self.unpriced += unpriced

    def as_json(self) -> dict[str, Any]:
        return {
            **self.key,
            "predictions": self.predictions,
            "predict_time": round(self.predict_time, 3),
            "cost": round(self.cost, 6),
            "unpriced": self.unpriced,
        }


@dataclass
class UsageReport:
    since: datetime
    until: datetime
    group_by: tuple[str, ...]
    lines: list[UsageLine]
    total: UsageLine

    @classmethod
    def of(
        cls, groups: Iterable[UsageGroup], prices: Prices, since: datetime, until: datetime, by: Sequence[str]
    ) -> UsageReport:
        """Sum the store's groups into lines keyed by ``by`` (any of ``GROUP_FIELDS``), costliest first."""
        lines: dict[tuple[str | None, ...], UsageLine] = {}
        total = UsageLine({})
        for group in groups:
            key = tuple(getattr(group, name) for name in by)
            lines.setdefault(key, UsageLine(dict(zip(by, key, strict=True)))).add(group, prices)
            total.add(group, prices)
        ordered = sorted(lines.values(), key=lambda line: (-line.cost, -line.predict_time, str(line.key)))
        return cls(since, until, tuple(by), ordered, total)

    def as_json(self, timestamp: Callable[[datetime], str | None]) -> dict[str, Any]:
        return {
            "since": timestamp(self.since),
            "until": timestamp(self.until),
            "currency": CURRENCY,
            "group_by": list(self.group_by),
            "results": [line.as_json() for line in self.lines],
            "total": self.total.as_json(),
        }


# -- periods and the budget ----------------------------------------------------------------------


def parse_moment(value: str) -> datetime:
    """An ISO-8601 date or date-time (``2026-12-01``, ``2026-12-01T08:00:00Z``), in UTC when it names
    no offset; ``ValueError`` saying so for anything else."""
    try:
        moment = datetime.fromisoformat(value.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it past year 1 or 9999
        raise ValueError(f"{value!r} is not an ISO-8601 date or date-time (UTC unless it says otherwise)") from None


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """The start of the ``period`` that holds ``now``, and the start of the next one."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(weeks=1)
    start = day.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


class Budget:
    """Each token's spending cap on upstream predictions, over a period.

    The engine holds one and calls ``admit(owner)`` where it decides to send a prediction upstream.
    What a token has spent is the estimated cost of its upstream predictions created in the current
    period, those still in flight counted at an estimate (``Prices.reserved``), so that a burst of
    creates cannot run far past the cap before the first of them finishes."""

    def __init__(
        self,
        store: Store,
        prices: Prices,
        limit: float | None,
        period: Period = "month",
        clock: Callable[[], datetime] = utcnow,
    ):
        self.store = store
        self.prices = prices
        #: USD per token per period; None: no cap.
        self.limit = limit
        self.period = period
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> Budget:
        return cls(store, settings.prices, settings.upstream_budget, settings.upstream_budget_period)

    def spent(self, owner: str) -> tuple[float, datetime]:
        """What ``owner`` has spent upstream in the current period, and when the next one begins."""
        start, end = period_bounds(self.period, self._clock())
        groups = self.store.usage(start, end, owner=owner, upstream_only=True)
        # Each model's average run on each provider, from its finished runs in the period.
        runs: dict[tuple[str, str], tuple[int, float]] = {}
        for g in groups:
            ran, seconds = runs.get((g.provider, g.model), (0, 0.0))
            runs[g.provider, g.model] = (ran + g.ran, seconds + g.predict_time)
        average = {key: seconds / ran for key, (ran, seconds) in runs.items() if ran}
        spent = sum(
            self.prices.cost(g)[0] + self.prices.reserved(g, average.get((g.provider, g.model))) for g in groups
        )
        return spent, end

    def admit(self, owner: str) -> None:
        """Return when ``owner`` may start another upstream prediction; raise ``OverBudget`` (a 402)
        once its spending has reached the cap."""
        if self.limit is None:
            return
        spent, resets = self.spent(owner)
        if spent >= self.limit:
            raise OverBudget(self.limit, spent, self.period, resets)

    def as_json(self, owner: str, timestamp: Callable[[datetime], str | None]) -> dict[str, Any] | None:
        """The token's budget as ``/v1/usage`` shows it; None without a cap."""
        if self.limit is None:
            return None
        spent, resets = self.spent(owner)
        return {
            "limit": self.limit,
            "spent": round(spent, 6),
            "period": self.period,
            "resets_at": timestamp(resets),
        }
