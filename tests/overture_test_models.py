"""Small models with one behaviour each, served next to the built-in ones through ``--model-module``.

Like Cog's fixture predictors: they make slow steps, failures, batching and file inputs easy to
trigger from a test through the real HTTP API.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from overture.models.base import Context, Model, Predictor, Version
from overture.models.schema import Input


class Steps(Predictor):
    output_schema = {"type": "string", "title": "Output"}

    def predict(
        self,
        ctx: Context,
        steps: int = Input(default=3, ge=0, le=10_000),
        step_seconds: float = Input(default=0.05, ge=0, le=60),
        fail: bool = Input(default=False),
        label: str = Input(default="done"),
        seed: int = Input(default=None),
    ) -> str:
        for step in range(steps):
            ctx.check_canceled()
            time.sleep(step_seconds)
            ctx.progress(step + 1, steps)
        if fail:
            raise ValueError("the model was asked to fail")
        ctx.log(f"finished {steps} steps")
        return f"{label}:{seed}"


class Batched(Predictor):
    """Records how many jobs shared each call, so tests can see batching happen."""

    output_schema = {"type": "object", "title": "Output"}
    max_batch_size = 4

    def predict(self, ctx: Context, text: str = Input(), delay: float = Input(default=0.3)) -> Any:
        return self.predict_batch([(ctx, {"text": text, "delay": delay})])[0]

    def predict_batch(self, jobs: Any) -> list[Any]:
        time.sleep(max(inputs["delay"] for _, inputs in jobs))
        return [{"text": inputs["text"], "batch_size": len(jobs)} for _, inputs in jobs]


class FileEcho(Predictor):
    """Returns what it received: the input file's digest, and the file itself as an output."""

    output_schema = {"type": "object", "title": "Output"}

    def predict(self, ctx: Context, audio: Path = Input(description="Any file")) -> Any:
        data = audio.read_bytes()
        copy = ctx.scratch_path("echo" + audio.suffix)
        copy.write_bytes(data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "file": copy}


class BrokenSetup(Predictor):
    def setup(self) -> None:
        raise RuntimeError("weights are missing")

    def predict(self, ctx: Context, prompt: str = Input(default="")) -> str:
        return prompt


MODELS = [
    Model("tests", "steps", "Sleeps in steps.", (Version("tests-steps-v1", Steps),)),
    Model("tests", "batched", "Shares one call between queued jobs.", (Version("tests-batched-v1", Batched),)),
    Model("tests", "file-echo", "Echoes a file input.", (Version("tests-file-echo-v1", FileEcho),)),
    Model("tests", "broken", "Fails in setup.", (Version("tests-broken-v1", BrokenSetup),)),
]
