"""``meta/musicgen``: MusicGen served as Replicate serves it, on transformers' implementation.

Two versions: Replicate's own (its id, its schema, and the alias ``melody``) and a newer one whose
``model_version`` also offers the small, medium and melody checkpoints that fit modest hardware.
Weights load lazily by hub id (``facebook/musicgen-<model_version>``) through ``Checkpoints``.
"""

from __future__ import annotations

import importlib
from typing import Any

from overture.models.base import Model, Version
from overture.models.musicgen.predictor import MusicgenPredictor, predictor_for
from overture.models.musicgen.request import MODEL_VERSIONS, REPLICATE_MODEL_VERSIONS

#: Replicate's current ``meta/musicgen`` version.
REPLICATE_VERSION = "671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb"
#: Overture's newer version: the same inputs with more ``model_version`` choices.
OVERTURE_VERSION = "4523c1b0094995fb527349df167df9410bc67a8e3b2acf9c2ba171fd47113491"

MUSICGEN = Model(
    owner="meta",
    name="musicgen",
    description="Generate music from a prompt or melody",
    versions=(
        Version(
            id=REPLICATE_VERSION,
            predictor=predictor_for(REPLICATE_MODEL_VERSIONS),
            created_at="2024-03-27T00:00:00.000000Z",
            aliases=("melody",),
        ),
        Version(id=OVERTURE_VERSION, predictor=predictor_for(MODEL_VERSIONS), created_at="2026-11-23T00:00:00.000000Z"),
    ),
    github_url="https://github.com/replicate/cog-musicgen",
    paper_url="https://arxiv.org/abs/2306.05284",
    license_url="https://github.com/facebookresearch/audiocraft/blob/main/LICENSE_weights",
)

MODELS = [MUSICGEN]

#: ``overture.testing.tiny_checkpoint`` finds these here; they load from ``tiny`` on first use.
_TINY_WRITERS = (
    "write_tiny_checkpoint",
    "write_tiny_stereo_checkpoint",
    "write_tiny_melody_checkpoint",
    "write_tiny_stereo_melody_checkpoint",
)


def __getattr__(name: str) -> Any:
    if name in _TINY_WRITERS:
        return getattr(importlib.import_module("overture.models.musicgen.tiny"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MODELS",
    "MUSICGEN",
    "OVERTURE_VERSION",
    "REPLICATE_VERSION",
    "MusicgenPredictor",
    *_TINY_WRITERS,
]
