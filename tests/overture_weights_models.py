"""A model whose weights are one large file on the hub, served through ``--model-module`` (or
``OVERTURE_MODEL_MODULES``): large enough that huggingface_hub writes part of it to disk before a
download can be killed and resumed."""

from __future__ import annotations

from overture.models.base import DEFAULT_WEIGHTS, Context, Model, Predictor, Version
from overture.runtime.weights import HubWeights

BIG_WEIGHTS = HubWeights("overture-tests/big-weights", ("weights.bin",))


class BigWeights(Predictor):
    output_schema = {"type": "integer", "title": "Output"}
    weights = {DEFAULT_WEIGHTS: BIG_WEIGHTS}

    def predict(self, ctx: Context) -> int:
        """The size of the weights file, found as a model's loading code finds its weights."""
        return (self.checkpoints.path(BIG_WEIGHTS.repo, BIG_WEIGHTS) / "weights.bin").stat().st_size


MODELS = [Model("tests", "big-weights", "Weights in one large file.", (Version("tests-big-weights-v1", BigWeights),))]
