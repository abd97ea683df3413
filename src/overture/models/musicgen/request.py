"""Replicate's ``meta/musicgen`` inputs: their checks and their quirks.

The error cases are those of Replicate's Cog predictor (``replicate/cog-musicgen``), raised as
``ValueError`` so that the prediction fails with the message. Nothing here needs torch: the
server checks and batches requests before any weights are loaded.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overture.models.musicgen.weights import hub_id
from overture.models.schema import shown

#: Replicate's choices, in its order.
REPLICATE_MODEL_VERSIONS = ("stereo-melody-large", "stereo-large", "melody-large", "large")
#: Overture's newer version adds the checkpoints that fit modest hardware.
MODEL_VERSIONS = (
    *REPLICATE_MODEL_VERSIONS,
    "small",
    "medium",
    "melody",
    "stereo-small",
    "stereo-medium",
    "stereo-melody",
)

MULTI_BAND_DIFFUSION_MISSING = (
    "multi_band_diffusion is not available on this server: it needs audiocraft's MultiBandDiffusion decoder "
    "(the audiocraft library and its facebook/multiband-diffusion weights), and no maintained implementation of it "
    "loads in transformers or diffusers. Set multi_band_diffusion to false to decode with EnCodec."
)
#: Longest window the models were trained on; longer clips are generated window by window.
MAX_WINDOW_SECONDS = 30
#: How far each further window moves forward (audiocraft's ``extend_stride``).
WINDOW_STRIDE_SECONDS = 18
#: Replicate's schema sets no maximum; without one, planning the windows of a huge duration (10**12 s)
#: never ended, holding the worker all MusicGen predictions share. A day is past any real use.
MAX_DURATION_SECONDS = 24 * 60 * 60
#: audiocraft's seeds go to numpy, which takes them below 2**32.
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class Sampling:
    top_k: int
    top_p: float
    temperature: float
    guidance: float

    @property
    def guided(self) -> bool:
        """Guidance 1 gives the conditional logits alone: no need to run the unconditional rows."""
        return self.guidance != 1


@dataclass(frozen=True)
class Request:
    model_version: str
    prompt: str | None
    input_audio: Path | None
    duration: int
    continuation: bool
    continuation_start: int
    continuation_end: int | None
    normalization_strategy: str
    output_format: str
    sampling: Sampling
    #: None: draw one at random.
    seed: int | None

    @classmethod
    def parse(cls, inputs: dict[str, Any]) -> Request:
        """Validated inputs (schema defaults applied) → a request, or ``ValueError`` saying why not."""
        model_version = inputs["model_version"]
        prompt = inputs.get("prompt") or None
        audio = inputs.get("input_audio")
        continuation = bool(inputs.get("continuation"))
        start, end = inputs.get("continuation_start") or 0, inputs.get("continuation_end")
        if end == -1:
            end = None
        if not prompt and not audio:
            raise ValueError("Must provide either prompt or input_audio")
        if continuation and not audio:
            raise ValueError("Must provide `input_audio` if continuation is `True`.")
        if audio and not continuation and "melody" not in model_version:
            raise ValueError(
                f"Melody conditioning needs a melody model, and {model_version} is not one: choose a `*melody*` "
                "model_version, or set `continuation` to continue input_audio instead."
            )
        if inputs.get("multi_band_diffusion") and model_version.startswith("stereo"):
            raise ValueError("Multi-band Diffusion only works with non-stereo models.")
        if audio and end is not None and start > end:
            raise ValueError("`continuation_start` must be less than or equal to `continuation_end`")
        if inputs.get("multi_band_diffusion"):
            raise ValueError(MULTI_BAND_DIFFUSION_MISSING)
        if inputs["duration"] < 1:
            raise ValueError(f"`duration` must be at least 1 second (got {shown(inputs['duration'])}).")
        if inputs["duration"] > MAX_DURATION_SECONDS:
            raise ValueError(
                f"`duration` must be at most {MAX_DURATION_SECONDS} seconds "
                f"(a day of audio; got {shown(inputs['duration'])})."
            )
        return cls(
            model_version=model_version,
            prompt=prompt,
            input_audio=Path(audio) if audio else None,
            duration=inputs["duration"],
            continuation=continuation,
            continuation_start=start,
            continuation_end=end,
            normalization_strategy=inputs["normalization_strategy"],
            output_format=inputs["output_format"],
            sampling=Sampling(
                top_k=inputs["top_k"],
                top_p=inputs["top_p"],
                temperature=inputs["temperature"],
                guidance=inputs["classifier_free_guidance"],
            ),
            seed=_seed(inputs.get("seed")),
        )

    @property
    def hub_id(self) -> str:
        return hub_id(self.model_version)

    @property
    def batch_key(self) -> Hashable:
        """Requests with equal keys can share a decoding loop."""
        return (self.hub_id, self.duration, self.sampling)

    def resolve_seed(self) -> int:
        # Never 0: as an input, 0 means "random" (see ``_seed``), so it could not reproduce the output.
        return self.seed if self.seed is not None else 1 + secrets.randbelow(SEED_LIMIT - 1)


def _seed(seed: int | None) -> int | None:
    """Replicate's rule is ``if not seed or seed == -1``: None, -1 and also 0 mean a random seed."""
    if not seed or seed == -1:
        return None
    if not 0 < seed < SEED_LIMIT:
        raise ValueError(f"`seed` must be between 0 and {SEED_LIMIT - 1}, or -1 for a random seed (got {shown(seed)}).")
    return seed
