"""What the upstream tests share: B, a server that relays to an upstream (docs/providers.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import replicate

from harness import TOKEN, UNLIMITED, Server
from overture.api.auth import owner_of
from overture.store.db import PredictionRow
from overture.store.store import Store, utcnow


def relaying(
    data_dir: Path, url: str, *routes: str, name: str = "a", token: str = TOKEN, extra: tuple[str, ...] = ()
) -> Server:
    """B: the upstream at ``url`` named ``name``, and each of ``routes`` (``MODEL=ROUTE``)."""
    args = ["--upstream", f"{name}={url}", "--upstream-token", f"{name}={token}", *UNLIMITED, *extra]
    for route in routes:
        args += ["--route", route]
    return Server(data_dir, *args)


def create_a_burst(client: replicate.Client) -> replicate.prediction.Prediction:
    """On B with ``tests/steps=burst:...`` and a tiny ``--burst-after``: one run first, so the pool's
    run time is known, then a long one running, so that the next would wait; that next one, which
    bursts, finished."""
    client.predictions.create(model="tests/steps", input={"steps": 5, "step_seconds": 0.1}).wait()
    client.predictions.create(model="tests/steps", input={"steps": 20, "step_seconds": 0.1})
    bursting = client.predictions.create(model="tests/steps", input={"steps": 1})
    bursting.wait()
    return bursting


def cut_off_create(server: Server, pid: str, model: str, version: str, given: dict[str, Any], upstream: str) -> None:
    """A prediction of B's (stopped) whose create a crash cut off: its record written before the
    call, as the process left it, the upstream's answer never written."""
    store = Store(server.data_dir, server.database_url)
    store.add(
        PredictionRow(
            id=pid,
            owner=owner_of(TOKEN),
            model=model,
            version=version,
            status="starting",
            input=given,
            logs="",
            created_at=utcnow(),
            provider=upstream,
            upstream={"name": upstream, "state": "creating", "key": pid, "created_at": utcnow().isoformat()},
        )
    )
    store.close()
