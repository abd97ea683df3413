"""The price table: what a second of a provider's time, or a prediction of a model, is estimated to
cost (docs/usage.md), and the periods a budget is counted over. Settings hold both, so they live
beside the settings, not in the engine that reports and enforces them.

A prediction is priced by the first of these that has a price for it:

1. its provider's per-second rate (``local`` is 0 by default: the operator's own machines);
2. the per-second rate of the hardware it reported;
3. its model's price per prediction (the seed document's figures by default).

A prediction none of them prices is counted as ``unpriced``, so that a report says what it leaves out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from overture.upstreams import LOCAL_PROVIDER

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


@dataclass(frozen=True)
class UsageGroup:
    """One owner's predictions of one model on one provider and hardware, in a period."""

    owner: str
    provider: str
    hardware: str | None
    model: str
    predictions: int
    #: Of those, the ones with a ``predict_time``: they ran, and are paid for.
    ran: int
    predict_time: float
    #: Of those, the ones still starting or processing.
    active: int


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

    def reserved(self, group: UsageGroup, average_seconds: float | None) -> float:
        """What a group's predictions still in flight will cost, as far as it is known now. Priced by
        a rate (their provider's, or their hardware's), each is counted at the ``average_seconds``
        that the model's finished runs there took; without that, or without a rate, at their model's
        price per prediction; with neither, at nothing."""
        if not group.active:
            return 0.0
        rate = self.providers.get(group.provider)
        if rate is None and group.hardware is not None:
            rate = self.hardware.get(group.hardware.lower())
        if rate is not None and average_seconds is not None:
            return rate * average_seconds * group.active
        return self.models.get(group.model, 0.0) * group.active


#: What a budget is counted over, in UTC: a calendar day, an ISO week (from Monday), a calendar month.
Period = Literal["day", "week", "month"]
PERIODS: tuple[str, ...] = get_args(Period)
