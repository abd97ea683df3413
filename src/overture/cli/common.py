"""What the commands share: the console on stderr (stdout carries results), list options, and
the progress bar of a running prediction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from overture.status import TERMINAL, Status

console = Console(stderr=True)


def split(values: list[str] | None) -> list[str]:
    """Accept repeated options, comma-separated lists and whitespace-separated env values alike."""
    return [item.strip() for value in values or [] for item in value.replace(",", " ").split() if item.strip()]


def watch(fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Poll ``fetch()`` until the prediction ends, drawing its progress bar."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting", total=100)
        while True:
            prediction = fetch()
            percent = _percent(prediction.get("logs") or "")
            bar.update(task, description=prediction["status"], completed=percent)
            if prediction["status"] in TERMINAL:
                bar.update(task, completed=100 if prediction["status"] == Status.SUCCEEDED else percent)
                return prediction
            time.sleep(0.2)


def _percent(logs: str) -> float:
    for line in reversed(logs.splitlines()):
        head = line.split("%|", 1)
        if len(head) == 2 and head[0].strip().isdigit():
            return float(head[0].strip())
    return 0.0
