"""``riffusion/riffusion``: Stable Diffusion 1.5 fine-tuned on spectrogram images, served with the
schema of Replicate's version (riffusion-hobby's Cog predictor) plus an optional ``seed``.

A prediction grows a 512×512 spectrogram from a seed image (img2img at strength ``denoising``),
optionally interpolating from ``prompt_a`` towards ``prompt_b`` by ``alpha``, and turns it into
5.11 s of 44.1 kHz mono audio. Output: ``{"audio": <wav>, "spectrogram": <jpg>}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overture.models.audio import encode
from overture.models.base import DEFAULT_WEIGHTS, Context, Model, Predictor, Version
from overture.models.diffusion import (
    load_pipeline,
    pipeline_weights,
    resolve_seed,
    seed_problems,
    step_reporter,
    steps_problems,
)
from overture.models.riffusion.seed_images import SEED_IMAGE_IDS, load_seed_image
from overture.models.riffusion.settings import RiffusionSettings
from overture.models.schema import Input
from overture.runtime.checkpoints import Checkpoints

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

__all__ = ["MODELS", "write_tiny_checkpoint"]

HUB_ID = "riffusion/riffusion-model-v1"

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Output",
    "description": "Output class for riffusion predictions",
    "required": ["audio", "spectrogram"],
    "properties": {
        "audio": {"type": "string", "format": "uri", "title": "Audio"},
        "spectrogram": {"type": "string", "format": "uri", "title": "Spectrogram"},
        "error": {"type": "string", "title": "Error"},
    },
}


#: The folders of the repo that the pipeline loads. Riffusion runs without Stable Diffusion's
#: safety checker (and so without its feature extractor), and the repo's other weights are for
#: other runtimes: ``riffusion-model-v1.ckpt`` and a TorchScript UNet.
COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
# Stable Diffusion 1.5's UNet 859.5 M and VAE 83.7 M (reference inference.md), CLIP ViT-L/14's text
# encoder 123 M.
WEIGHTS = pipeline_weights(HUB_ID, COMPONENTS, parameters=1_066_000_000)


def load(checkpoints: Checkpoints) -> StableDiffusionPipeline:
    """riffusion-model-v1's Stable Diffusion pipeline, or the operator's substitute for it."""
    # torch and diffusers load with the first prediction, not with the server.
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

    return load_pipeline(
        checkpoints,
        WEIGHTS,
        StableDiffusionPipeline,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


class RiffusionPredictor(Predictor):
    output_schema = OUTPUT_SCHEMA
    weights = {DEFAULT_WEIGHTS: WEIGHTS}

    @classmethod
    def check_inputs(cls, raw: Mapping[str, Any], values: dict[str, Any]) -> list[tuple[str, str]]:
        return seed_problems(values["seed"]) + steps_problems("num_inference_steps", values["num_inference_steps"])

    def predict(
        self,
        ctx: Context,
        prompt_a: str = Input(description="The prompt for your audio", default="funky synth solo"),
        denoising: float = Input(description="How much to transform input spectrogram", default=0.75, ge=0, le=1),
        prompt_b: str = Input(
            description="The second prompt to interpolate with the first,leave blank if no interpolation",
            default=None,
        ),
        alpha: float = Input(
            description="Interpolation alpha if using two prompts."
            "A value of 0 uses prompt_a fully, a value of 1 uses prompt_b fully",
            default=0.5,
            ge=0,
            le=1,
        ),
        num_inference_steps: int = Input(description="Number of steps to run the diffusion model", default=50, ge=1),
        seed_image_id: str = Input(description="Seed spectrogram to use", default="vibes", choices=SEED_IMAGE_IDS),
        seed: int = Input(
            description="Random seed (an Overture addition; Replicate's model has none). "
            "Leave blank or -1 for a random one.",
            default=None,
        ),
    ) -> dict[str, Path]:
        import torch

        from overture.models.riffusion.riffuse import Riff, denoising_steps, riffuse
        from overture.models.riffusion.spectrogram import SpectrogramParams, audio_from_image

        if not prompt_b:
            # riffusion's rule: without a second prompt there is nothing to interpolate towards.
            prompt_b, alpha = prompt_a, 0.0
        seed_a = resolve_seed(seed)
        seed_b = (seed_a + 1) % 2**32
        ctx.log(f"Using seeds: {seed_a} and {seed_b}")
        seed_image = load_seed_image(seed_image_id, self.own_settings(RiffusionSettings).seed_images)
        pipe = load(self.checkpoints)
        riff = Riff(prompt_a, prompt_b, alpha, denoising, num_inference_steps, seed_a, seed_b)
        spectrogram = riffuse(pipe, riff, seed_image, step_reporter(ctx, denoising_steps(pipe, riff)))
        audio = audio_from_image(spectrogram, generator=torch.Generator().manual_seed(seed_a))
        audio_path = ctx.scratch_path("gen_sound.wav")
        audio_path.write_bytes(encode(audio[:, None], SpectrogramParams().sample_rate, "wav"))
        image_path = ctx.scratch_path("spectrogram.jpg")
        spectrogram.save(image_path, format="JPEG")
        return {"audio": audio_path, "spectrogram": image_path}


def write_tiny_checkpoint(path: Path) -> None:
    """A tiny random checkpoint for tests and offline trials (see ``tiny.py``)."""
    from overture.models.riffusion.tiny import write_tiny_checkpoint as write

    write(path)


VERSION = "8cf61ea6c56afd61d8f5b9ffd14d7c216c0a93844ce2d82ac1c9ecc9c7f24e05"

MODELS = [
    Model(
        owner="riffusion",
        name="riffusion",
        description="Stable diffusion for real-time music generation: text to 5 s spectrogram clips, "
        "with interpolation between two prompts.",
        versions=(Version(id=VERSION, predictor=RiffusionPredictor, created_at="2022-12-16T00:00:00.000000Z"),),
        github_url="https://github.com/riffusion/riffusion-hobby",
        paper_url="https://www.riffusion.com/about",
        license_url="https://github.com/riffusion/riffusion-hobby/blob/main/LICENSE",
    )
]
