"""Each model's weights by variant, as its predictors declare them, and whether they are ready:
for ``overture models --local``, ``overture pull`` and ``overture prune``, the server's start log
and the ``x-overture-weights`` field of a model.
"""

from __future__ import annotations

import logging
from typing import Any

from overture.errors import CheckpointMissing
from overture.models.base import Model, Version
from overture.models.registry import Registry
from overture.runtime.checkpoints import Checkpoints, CheckpointSettings
from overture.runtime.weights import HubWeights, OnDisk, on_disk

log = logging.getLogger(__name__)


def variants(model: Model, version: Version | None = None) -> dict[str, HubWeights]:
    """``model_version`` → weights, for one version or every version of ``model`` (newest first)."""
    found: dict[str, HubWeights] = {}
    for each in [version] if version is not None else reversed(model.versions):
        for name, weights in each.predictor.weights.items():
            found.setdefault(name, weights)
    return found


def declared(registry: Registry) -> list[HubWeights]:
    """Every variant's weights of every model: what ``overture prune`` keeps."""
    return [weights for model in registry.models.values() for weights in variants(model).values()]


def serving(weights: HubWeights, settings: CheckpointSettings) -> tuple[HubWeights, OnDisk]:
    """The weights that would load for ``weights`` under the operator's substitutions and
    mappings, and whether they are on disk; refused ones are never ready."""
    try:
        served = weights.serving(Checkpoints(settings).served(weights.repo))
    except CheckpointMissing:
        return weights, OnDisk(ready=False)
    return served, on_disk(served, settings.local_dirs)


def readiness(model: Model, settings: CheckpointSettings) -> list[dict[str, Any]]:
    """The ``x-overture-weights`` of ``model``: each variant, its repo, and whether it can load
    without the network; where files are there but cannot load, the ``reason``."""
    report = []
    for name, weights in variants(model).items():
        served, state = serving(weights, settings)
        entry: dict[str, Any] = {
            "model_version": name,
            "repo": weights.repo,
            "revision": weights.revision,
            "ready": state.ready,
        }
        if served.repo != weights.repo:
            entry["served_by"] = served.repo
        if state.problem is not None:
            entry["reason"] = state.problem
        report.append(entry)
    return report


def log_readiness(registry: Registry, settings: CheckpointSettings) -> None:
    """One log line per model with weights: which variants are ready and which need a pull."""
    for model in registry.models.values():
        report = readiness(model, settings)
        if not report:
            continue
        ready = [entry["model_version"] for entry in report if entry["ready"]]
        missing = [entry["model_version"] for entry in report if not entry["ready"] and "reason" not in entry]
        log.info(
            "weights of %s: ready: %s; not on disk: %s%s",
            model.ref,
            ", ".join(ready) or "none",
            ", ".join(missing) or "none",
            # A model with one set of weights needs no --model-version.
            f" (overture pull {model.ref}{' --model-version NAME' if len(report) > 1 else ''})" if missing else "",
        )
        for entry in report:
            if "reason" in entry:
                log.warning("weights of %s, %s: not ready: %s", model.ref, entry["model_version"], entry["reason"])
