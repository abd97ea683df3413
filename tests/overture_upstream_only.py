"""A model that only the upstream serves in tests/test_upstream.py (its A loads this module, its B
does not): B lists and validates it from A's own documents, and relays every prediction of it."""

from __future__ import annotations

from overture.models.base import Context, Model, Predictor, Version
from overture.models.schema import Input


class Shout(Predictor):
    output_schema = {"type": "string", "title": "Output"}

    def predict(
        self,
        ctx: Context,
        text: str = Input(description="What to shout."),
        times: int = Input(default=1, ge=1, le=5),
        mood: str = Input(default="glad", choices=["glad", "cross"]),
    ) -> str:
        return " ".join([text.upper()] * times) + ("!" if mood == "glad" else "!!!")


MODELS = [Model("upstream-only", "shout", "Shouts its text, on the upstream only.", (Version("shout-v1", Shout),))]
