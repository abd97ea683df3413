"""What predictions cost: the price table, usage reports over a period, and the per-token budget on
upstream predictions (docs/usage.md).

Costs are estimates: the server knows how long a provider says a prediction ran (``predict_time``)
and, where it says so, on what hardware; the price table turns that into dollars. A prediction is
priced by the first of these that has a price for it:

1. its provider's per-second rate (``local`` is 0 by default: the operator's own machines);
2. the per-second rate of the hardware it reported;
3. its model's price per prediction (the seed document's figures by default).

A prediction none of them prices is counted as ``unpriced``, so that a report says what it leaves out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from overture.errors import OverBudget
from overture.store.store import LOCAL_PROVIDER, Store, UsageGroup, utcnow

if TYPE_CHECKING:
    from overture.config import Settings

CURRENCY = "USD"

#: Replicate's published per-second prices (https://replicate.com/pricing, read December 2026), by
#: the hardware's SKU and its display name, either of which a provider may report.
REPLICATE_HARDWARE: tuple[tuple[str, str, float], ...] = (
    ("cpu", "CPU", 0.000100),
    ("gpu-t4", "Nvidia T4 GPU", 0.000225),
    ("gpu-a40-small", "Nvidia A40 GPU", 0.000575),
    ("gpu-a40-large", "Nvidia A40 (Large) GPU", 0.000725),
    ("gpu-l40s", "Nvidia L40S GPU", 0.000975),
    ("gpu-a100-large", "Nvidia A100 (80GB) GPU", 0.001400),
    ("gpu-h100", "Nvidia H100 GPU", 0.001525),
)

#: The seed document's cost per generation ("Model Comparison": MusicGen Large ~$0.10 for 30 s,
#: Riffusion ~$0.02, Stable Audio ~$0.08). MusicGen takes its Large figure: a budget should not
#: under-count, and Replicate's default variant is a large one.
SEED_MODEL_PRICES: Mapping[str, float] = {
    "meta/musicgen": 0.10,
    "riffusion/riffusion": 0.02,
    "stability-ai/stable-audio-open-1.0": 0.08,
}

#: Runs on this server cost nothing by default; a rate here makes reports show what they would cost.
DEFAULT_PROVIDER_RATES: Mapping[str, float] = {LOCAL_PROVIDER: 0.0}

#: The sections of a price table, and what each entry means.
SECTIONS = {
    "providers": "USD per second of predict_time, by provider",
    "hardware": "USD per second of predict_time, by the hardware a provider reports",
    "models": "USD per prediction, by model (owner/name)",
}


def _hardware_defaults() -> dict[str, float]:
    return {name.lower(): price for sku, display, price in REPLICATE_HARDWARE for name in (sku, display)}


@dataclass(frozen=True)
class Prices:
    """The price table. Hardware names are matched without regard to case."""

    providers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROVIDER_RATES))
    hardware: Mapping[str, float] = field(default_factory=_hardware_defaults)
    models: Mapping[str, float] = field(default_factory=lambda: dict(SEED_MODEL_PRICES))

    def layered(self, table: Mapping[str, Any], where: str) -> Prices:
        """These prices with a TOML table's ``[providers]``, ``[hardware]`` and ``[models]`` entries
        over them; anything else in it raises ``ValueError``, saying ``where``."""
        unknown = sorted(set(table) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown price section {unknown[0]!r}; expected {', '.join(SECTIONS)}")
        merged: dict[str, dict[str, float]] = {}
        for section in SECTIONS:
            entries = table.get(section, {})
            if not isinstance(entries, Mapping):
                raise ValueError(f'{where}: [{section}] must be a table of prices, such as "name" = 0.001')
            merged[section] = {**getattr(self, section)}
            for name, price in entries.items():
                if isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price < math.inf:
                    raise ValueError(f"{where}: {section}.{name} must be a price of 0 or more, not {price!r}")
                merged[section][name.lower() if section == "hardware" else name] = float(price)
        return Prices(**merged)

    def cost(self, group: UsageGroup) -> tuple[float, int]:
        """The estimated cost of a group's predictions that ran, and how many of them nothing prices."""
        rate = self.providers.get(group.provider)
        if rate is None and group.hardware is not None:
            rate = self.hardware.get(group.hardware.lower())
        if rate is not None:
            return rate * group.predict_time, 0
        each = self.models.get(group.model)
        return (0.0, group.ran) if each is None else (each * group.ran, 0)

    def reserved(self, group: UsageGroup) -> float:
        """What a group's predictions still in flight will cost, as far as it is known now: their
        model's price per prediction (nothing for a provider priced by its own rate)."""
        if group.provider in self.providers:
            return 0.0
        return self.models.get(group.model, 0.0) * group.active


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


#: What a budget is counted over, in UTC: a calendar day, an ISO week (from Monday), a calendar month.
Period = Literal["day", "week", "month"]
PERIODS: tuple[str, ...] = get_args(Period)


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
    period, those still in flight counted at their model's price, so that a burst of creates cannot
    run far past the cap before the first of them finishes."""

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
        return sum(self.prices.cost(g)[0] + self.prices.reserved(g) for g in groups), end

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
