"""Riffusion's interpolated img2img (riffusion-hobby ``RiffusionPipeline.riffuse``) on the
components of a Stable Diffusion 1.5 pipeline.

Between two prompts, the text embeddings are blended linearly and the initial noise spherically
(from two seeds), at the same ``alpha``; starting from a seed spectrogram's latent noised to the
``denoising`` strength, the UNet then denoises with classifier-free guidance 7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

# From the defining modules: the names ``diffusers`` exports are, to a type checker, dummy placeholders.
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerOutput
from PIL import Image

#: riffusion's ``PromptInput.guidance`` default; neither Replicate model exposes it.
GUIDANCE_SCALE = 7.0


class Scheduler(Protocol):
    """What img2img calls on a diffusers scheduler: each scheduler class (PNDM, DDIM, ...) defines
    these, their ``SchedulerMixin`` base none."""

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor: ...

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor) -> SchedulerOutput: ...


@dataclass(frozen=True)
class Riff:
    prompt_a: str
    prompt_b: str
    alpha: float
    denoising: float
    steps: int
    seed_a: int
    seed_b: int


def denoising_steps(pipe: StableDiffusionPipeline, riff: Riff) -> int:
    """How many UNet steps ``riffuse`` will run (img2img runs the last ``steps * denoising`` of them)."""
    return len(_schedule(pipe, riff)[1])


def riffuse(
    pipe: StableDiffusionPipeline, riff: Riff, seed_image: Image.Image, on_step: Callable[[int], None]
) -> Image.Image:
    """The spectrogram image for ``riff``, grown from ``seed_image``."""
    scheduler, timesteps = _schedule(pipe, riff)
    if len(timesteps) == 0:
        # No step to run at this strength: the seed image comes back as it is.
        return seed_image.convert("RGB")
    generator_a = torch.Generator().manual_seed(riff.seed_a)
    generator_b = torch.Generator().manual_seed(riff.seed_b)
    with torch.inference_mode():
        conditioning = _text_conditioning(pipe, riff)
        start = _encode(pipe, seed_image, generator_a)
        noise_a = torch.randn(start.shape, generator=generator_a)
        noise_b = torch.randn(start.shape, generator=generator_b)
        noise = slerp(riff.alpha, noise_a, noise_b).to(start)
        latents = scheduler.add_noise(start, noise, timesteps[:1])
        for done, t in enumerate(timesteps, start=1):
            model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            unconditional, conditional = pipe.unet(model_in, t, encoder_hidden_states=conditioning).sample.chunk(2)
            guided = unconditional + GUIDANCE_SCALE * (conditional - unconditional)
            latents = scheduler.step(guided, t, latents).prev_sample
            on_step(done)
        return _decode(pipe, latents)


def _schedule(pipe: StableDiffusionPipeline, riff: Riff) -> tuple[Scheduler, torch.Tensor]:
    """A fresh scheduler of the checkpoint's kind (schedulers keep per-run state) and the
    timesteps left to run at this strength, as diffusers' img2img computes them."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(riff.steps, device=pipe.device)
    kept = min(int(riff.steps * riff.denoising), riff.steps)
    begin = (riff.steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler, scheduler.timesteps[begin:] if kept else scheduler.timesteps[:0]


def _text_conditioning(pipe: StableDiffusionPipeline, riff: Riff) -> torch.Tensor:
    """[unconditional, lerp(a, b, alpha)] text embeddings; the unconditional one is the empty prompt's."""
    prompts, negatives = pipe.encode_prompt([riff.prompt_a, riff.prompt_b], pipe.device, 1, True)
    blended = torch.lerp(prompts[:1], prompts[1:], riff.alpha)
    return torch.cat([negatives[:1], blended])


def slerp(alpha: float, a: torch.Tensor, b: torch.Tensor, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation, falling back to linear when ``a`` and ``b`` are nearly parallel
    (riffusion's ``slerp``): blended Gaussian noise keeps the norm a denoiser expects."""
    dot = float((a * b).sum() / (a.norm() * b.norm()))
    if abs(dot) > dot_threshold:
        return torch.lerp(a, b, alpha)
    theta = np.arccos(dot)
    return (np.sin(theta * (1 - alpha)) * a + np.sin(theta * alpha) * b) / np.sin(theta)


def _encode(pipe: StableDiffusionPipeline, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0) * 2 - 1
    tensor = tensor.to(pipe.device, pipe.vae.dtype)
    latents = pipe.vae.encode(tensor).latent_dist.sample(generator=generator)
    return latents * pipe.vae.config.scaling_factor


def _decode(pipe: StableDiffusionPipeline, latents: torch.Tensor) -> Image.Image:
    pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    pixels = (pixels / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
    return Image.fromarray((pixels * 255).round().astype(np.uint8))
