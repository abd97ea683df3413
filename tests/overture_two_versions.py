"""A model with two versions, served by both servers in tests/test_upstream.py: a prediction of
the older one, routed upstream at model level, runs that version there too."""

from __future__ import annotations

from overture.models.base import Context, Model, Predictor, Version
from overture.models.schema import Input


class First(Predictor):
    output_schema = {"type": "string", "title": "Output"}

    def predict(self, ctx: Context, seed: int = Input(default=0)) -> str:
        return f"first:{seed}"


class Second(First):
    def predict(self, ctx: Context, seed: int = Input(default=0)) -> str:
        return f"second:{seed}"


MODELS = [
    Model(
        "tests",
        "two-versions",
        "Says which of its versions ran.",
        (Version("tests-two-versions-v1", First), Version("tests-two-versions-v2", Second)),
    )
]
