"""Stable Audio Open 1.0, served under two names.

``stackadoc/stable-audio-open-1.0`` is the public Replicate model for it (cog-stable-audio), with
its version id and exactly its schema. ``stability-ai/stable-audio-open-1.0`` is the name the seed
document calls with ``duration``: the same inputs plus ``duration`` (an alias of
``seconds_total``) and ``output_format``.

Behaviour follows cog-stable-audio: ``batch_size`` clips are peak-normalized together and joined
end to end in one 44.1 kHz stereo file; ``init_noise_level`` has no effect (it only acts on init
audio, which neither model exposes). Unlike it, each clip is trimmed to ``seconds_total``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overture.models.audio import encode
from overture.models.base import DEFAULT_WEIGHTS, Context, Model, Predictor, Version
from overture.models.diffusion import load_pipeline, pipeline_weights, resolve_seed, step_reporter
from overture.models.schema import Input
from overture.models.stable_audio.request import Request
from overture.runtime.checkpoints import Checkpoints

if TYPE_CHECKING:
    from diffusers.pipelines.stable_audio.pipeline_stable_audio import StableAudioPipeline

__all__ = ["MODELS", "write_tiny_checkpoint"]

HUB_ID = "stabilityai/stable-audio-open-1.0"
MAX_SECONDS = 47

# cog-stable-audio declares its inputs without descriptions; both names share these declarations.
PROMPT = Input()
NEGATIVE_PROMPT = Input(default="")
SECONDS_START = Input(default=0)
SECONDS_TOTAL = Input(default=8, le=MAX_SECONDS)
CFG_SCALE = Input(default=6.0)
STEPS = Input(default=100)
SEED = Input(default=-1)
SAMPLER_TYPE = Input(default="dpmpp-3m-sde")
SIGMA_MIN = Input(default=0.03)
SIGMA_MAX = Input(default=500)
INIT_NOISE_LEVEL = Input(default=1.0)
BATCH_SIZE = Input(default=1)


#: The folders of the repo that ``StableAudioPipeline.from_pretrained`` loads; the repo also
#: holds the same weights as single files for stable-audio-tools (``model.ckpt``, ``model.safetensors``).
COMPONENTS = ("projection_model", "scheduler", "text_encoder", "tokenizer", "transformer", "vae")
#: Gated on the hub: its licence must be accepted before the hub serves the files.
# DiT 1056.9 M and Oobleck VAE 156.1 M (reference inference.md), T5-base's encoder about 110 M.
WEIGHTS = pipeline_weights(HUB_ID, COMPONENTS, gated=True, parameters=1_323_000_000)


def load(checkpoints: Checkpoints) -> StableAudioPipeline:
    """Stable Audio Open's diffusers pipeline, or the operator's substitute for it."""
    # torch and diffusers load with the first prediction, not with the server.
    from diffusers.pipelines.stable_audio.pipeline_stable_audio import StableAudioPipeline

    return load_pipeline(checkpoints, WEIGHTS, StableAudioPipeline)


class _StableAudioPredictor(Predictor):
    weights = {DEFAULT_WEIGHTS: WEIGHTS}

    @classmethod
    def check_inputs(cls, raw: Mapping[str, Any], values: dict[str, Any]) -> list[tuple[str, str]]:
        return Request.from_inputs(values).problems(given=[name for name, value in raw.items() if value is not None])

    def _run(self, ctx: Context, inputs: Mapping[str, Any], output_format: str) -> Path:
        from overture.models.stable_audio.generate import frames_for, generate, joined_clips, sample_rate

        request = dataclasses.replace(Request.from_inputs(inputs), seed=resolve_seed(inputs["seed"]))
        pipe = load(self.checkpoints)
        frames = frames_for(pipe, request.seconds_total + 1)
        ctx.log(f"Using seed: {request.seed}")
        latent_seconds = frames * pipe.vae.hop_length / sample_rate(pipe)
        ctx.log(f"Sampler {request.sampler_type}, {request.steps} steps over {latent_seconds:.2f} s of latent")
        audio = generate(pipe, request, step_reporter(ctx, request.steps), frames)
        path = ctx.scratch_path(f"output.{output_format}")
        path.write_bytes(encode(joined_clips(audio), sample_rate(pipe), output_format))
        return path


class StackadocStableAudio(_StableAudioPredictor):
    """``stackadoc/stable-audio-open-1.0``: Replicate's schema, input for input."""

    def predict(
        self,
        ctx: Context,
        prompt: str = PROMPT,
        negative_prompt: str = NEGATIVE_PROMPT,
        seconds_start: int = SECONDS_START,
        seconds_total: int = SECONDS_TOTAL,
        cfg_scale: float = CFG_SCALE,
        steps: int = STEPS,
        seed: int = SEED,
        sampler_type: str = SAMPLER_TYPE,
        sigma_min: float = SIGMA_MIN,
        sigma_max: int = SIGMA_MAX,
        init_noise_level: float = INIT_NOISE_LEVEL,
        batch_size: int = BATCH_SIZE,
    ) -> Path:
        # Taken before any other name is bound: the parameters are the inputs, by name.
        inputs = locals()
        return self._run(ctx, inputs, "wav")


class StabilityStableAudio(_StableAudioPredictor):
    """``stability-ai/stable-audio-open-1.0``: the same inputs, plus the seed document's ``duration``
    and a choice of MP3."""

    def predict(
        self,
        ctx: Context,
        prompt: str = PROMPT,
        negative_prompt: str = NEGATIVE_PROMPT,
        seconds_start: int = SECONDS_START,
        seconds_total: int = SECONDS_TOTAL,
        cfg_scale: float = CFG_SCALE,
        steps: int = STEPS,
        seed: int = SEED,
        sampler_type: str = SAMPLER_TYPE,
        sigma_min: float = SIGMA_MIN,
        sigma_max: int = SIGMA_MAX,
        init_noise_level: float = INIT_NOISE_LEVEL,
        batch_size: int = BATCH_SIZE,
        duration: int = Input(
            default=None,
            ge=1,
            le=MAX_SECONDS,
            description="Length of the audio in seconds: another name for seconds_total.",
        ),
        output_format: str = Input(
            default="wav", choices=["wav", "mp3"], description="Output format for generated audio."
        ),
    ) -> Path:
        # Taken before any other name is bound: the parameters are the inputs, by name.
        inputs = locals()
        return self._run(ctx, _duration_as_seconds_total(inputs), output_format)

    @classmethod
    def check_inputs(cls, raw: Mapping[str, Any], values: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_inputs(raw, _duration_as_seconds_total(values))
        duration, seconds_total = values["duration"], values["seconds_total"]
        # Only a seconds_total the client wrote can disagree: the schema's default yields to duration.
        if duration is not None and raw.get("seconds_total") is not None and duration != seconds_total:
            disagree = f"the two disagree ({duration} and {seconds_total})"
            problems.insert(0, ("duration", f"is another name for seconds_total, and {disagree}: give one of them"))
        return problems


def _duration_as_seconds_total(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs with ``duration``, when given, as ``seconds_total``: the name the request knows."""
    duration = inputs["duration"]
    return dict(inputs) if duration is None else {**inputs, "seconds_total": duration}


def write_tiny_checkpoint(path: Path) -> None:
    """A tiny random checkpoint for tests and offline trials (see ``tiny.py``)."""
    from overture.models.stable_audio.tiny import write_tiny_checkpoint as write

    write(path)


STACKADOC_VERSION = "49b1d4f06f69989dd2c8252d455d2deebaa3c3e3e894694b8aed301c69e75913"
STABILITY_VERSION = "96a43a8c84f6f031d98b083d66317c453a640802433f576f37075d1e03c226ef"

_GITHUB = "https://github.com/Stability-AI/stable-audio-tools"
_PAPER = "https://arxiv.org/abs/2407.14358"
_LICENSE = "https://huggingface.co/stabilityai/stable-audio-open-1.0/blob/main/LICENSE.md"

MODELS = [
    Model(
        owner="stability-ai",
        name="stable-audio-open-1.0",
        description="Stable Audio Open 1.0: text to 44.1 kHz stereo audio of up to 47 s, such as drum beats, "
        "instrument riffs, ambient sounds and production elements.",
        versions=(
            Version(id=STABILITY_VERSION, predictor=StabilityStableAudio, created_at="2026-11-23T00:00:00.000000Z"),
        ),
        github_url=_GITHUB,
        paper_url=_PAPER,
        license_url=_LICENSE,
    ),
    Model(
        owner="stackadoc",
        name="stable-audio-open-1.0",
        description="Stable Audio Open 1.0 as Replicate serves it from cog-stable-audio: "
        "text to 44.1 kHz stereo audio.",
        versions=(
            Version(id=STACKADOC_VERSION, predictor=StackadocStableAudio, created_at="2024-06-24T00:00:00.000000Z"),
        ),
        github_url="https://github.com/stackadoc/cog-stable-audio",
        paper_url=_PAPER,
        license_url=_LICENSE,
    ),
]
