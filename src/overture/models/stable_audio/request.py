"""One Stable Audio generation request, as both served schemas describe it."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from overture.models.diffusion import seed_problems, steps_problems
from overture.models.schema import shown

#: stable-audio-tools' ``sampler_type`` names that Overture runs (``sampling.SAMPLERS``); its
#: ``k-dpm-fast`` and ``k-dpm-adaptive`` are not offered. Kept here, free of torch, because the
#: server checks requests against it before any model is loaded.
SAMPLER_TYPES = ("dpmpp-3m-sde", "dpmpp-2m-sde", "k-heun", "k-lms", "k-dpmpp-2s-ancestral", "k-dpm-2")
SIGMAS = ("sigma_min", "sigma_max")
#: Most clips one request may ask for: they are generated as one batch, and the published schemas
#: set no maximum, so without one a single request could ask for any amount of memory.
MAX_BATCH_SIZE = 16


@dataclass(frozen=True)
class Request:
    prompt: str
    negative_prompt: str = ""
    seconds_start: int = 0
    seconds_total: int = 8
    cfg_scale: float = 6.0
    steps: int = 100
    seed: int = 0
    sampler_type: str = "dpmpp-3m-sde"
    sigma_min: float = 0.03
    sigma_max: float = 500.0
    batch_size: int = 1

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> Request:
        """The request a prediction's inputs describe; inputs it has no field for (such as
        ``init_noise_level``, which has no effect) are left out."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in inputs.items() if name in names})

    def problems(self, given: Collection[str] = SIGMAS) -> list[tuple[str, str]]:
        """``(field, message)`` for each value the schema lets through but generation cannot use.

        ``given`` holds the inputs the client set: a wrong pair of sigmas is reported on the one(s)
        among them, since the other is the default."""
        problems = []
        for name in ("seconds_total", "steps", "batch_size"):
            if getattr(self, name) < 1:
                problems.append((name, f"must be at least 1 (got {shown(getattr(self, name))})"))
        problems += steps_problems("steps", self.steps)
        if self.batch_size > MAX_BATCH_SIZE:
            problems.append(("batch_size", f"must be at most {MAX_BATCH_SIZE} (got {shown(self.batch_size)})"))
        if self.seconds_start < 0:
            problems.append(("seconds_start", f"must not be negative (got {shown(self.seconds_start)})"))
        problems += seed_problems(self.seed)
        if self.sigma_min <= 0:
            problems.append(("sigma_min", f"must be above 0 (got {shown(self.sigma_min)})"))
        elif self.sigma_min >= self.sigma_max:
            pair = f"(got sigma_min {shown(self.sigma_min)} and sigma_max {shown(self.sigma_max)})"
            chosen = [name for name in SIGMAS if name in given] or list(SIGMAS)
            if "sigma_min" in chosen:
                problems.append(("sigma_min", f"must be below sigma_max {pair}"))
            if "sigma_max" in chosen:
                problems.append(("sigma_max", f"must be above sigma_min {pair}"))
        if self.sampler_type not in SAMPLER_TYPES:
            problems.append(
                ("sampler_type", f"{self.sampler_type!r} is not supported; use one of {', '.join(SAMPLER_TYPES)}")
            )
        return problems

    def check(self) -> None:
        """Raise ``ValueError`` naming each problem; the server finds them earlier, at create time,
        but generation is also called directly (benchmarks, tests)."""
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{name}: {message}" for name, message in problems))
