"""Text → stereo audio with Stable Audio Open's components (diffusers' ``StableAudioPipeline``),
sampled the way stable-audio-tools does it for Replicate's predictor.

diffusers' own ``__call__`` always denoises and decodes the model's full window (1024 latent
frames, 47.55 s) and crops afterwards. Here the latent is only as long as the request needs,
``seconds_total + 1`` seconds like the Replicate predictor, and the audio is trimmed to
``seconds_total``: on a CPU that is the difference between minutes and an hour. The model is
conditioned on ``seconds_total`` and trained to fall silent after it, so the kept part does not
depend on the window beyond it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed

# From its defining module: the name ``diffusers`` exports is, to a type checker, a dummy placeholder.
from diffusers.pipelines.stable_audio.pipeline_stable_audio import StableAudioPipeline

from overture.models.stable_audio.request import Request
from overture.models.stable_audio.sampling import Denoiser, OnStep, exponential_sigmas, sample


def sample_rate(pipe: StableAudioPipeline) -> int:
    return int(pipe.vae.config.sampling_rate)


def window_frames(pipe: StableAudioPipeline) -> int:
    """Latent frames of the model's full window (1024, 47.55 s for Stable Audio Open)."""
    return int(pipe.transformer.config.sample_size)


def frames_for(pipe: StableAudioPipeline, seconds: float) -> int:
    """Latent frames covering ``seconds`` of audio, at most the model's window."""
    return min(window_frames(pipe), math.ceil(seconds * sample_rate(pipe) / pipe.vae.hop_length))


def generate(pipe: StableAudioPipeline, request: Request, on_step: OnStep, frames: int | None = None) -> torch.Tensor:
    """Float audio (batch, channels, seconds_total * sample rate).

    ``frames`` is the latent length to denoise: by default ``seconds_total + 1`` seconds' worth; the
    full window (``window_frames``) gives what diffusers' pipeline would.
    """
    request.check()
    frames = frames or frames_for(pipe, request.seconds_total + 1)
    kept = request.seconds_total * sample_rate(pipe)
    if frames * pipe.vae.hop_length < kept:
        raise ValueError(
            f"seconds_total {request.seconds_total} is longer than this model's window of "
            f"{window_frames(pipe) * pipe.vae.hop_length / sample_rate(pipe):.2f} s"
        )
    generator = torch.Generator().manual_seed(request.seed)
    shape = (request.batch_size, pipe.transformer.config.in_channels, frames)
    noise = torch.randn(shape, generator=generator).to(pipe.device)
    sigmas = exponential_sigmas(request.steps, request.sigma_min, request.sigma_max)
    with torch.inference_mode():
        denoise = _denoiser(pipe, request, frames)
        latents = sample(request.sampler_type, denoise, noise, sigmas, generator, on_step)
        audio = pipe.vae.decode(latents.to(pipe.vae.dtype)).sample.float()
    return audio[:, :, :kept].cpu()


def joined_clips(audio: torch.Tensor) -> np.ndarray:
    """(batch, channels, samples) → (batch * samples, channels): clips end to end, peak-normalized
    over the whole batch as cog-stable-audio does."""
    peak = float(audio.abs().max())
    if peak > 0:
        audio = (audio / peak).clamp(-1, 1)
    return torch.cat(list(audio), dim=1).T.numpy()


def _denoiser(pipe: StableAudioPipeline, request: Request, frames: int) -> Denoiser:
    """``D(x, sigma)``: k-diffusion's v-prediction denoiser (sigma_data 1) around the DiT, with
    classifier-free guidance when ``cfg_scale`` is not 1, as stable-audio-tools applies it."""
    guided = request.cfg_scale != 1.0
    cross, global_states = _conditioning(pipe, request, guided)
    rotary = get_1d_rotary_pos_embed(
        pipe.rotary_embed_dim, frames + global_states.shape[1], use_real=True, repeat_interleave_real=False
    )
    dtype = pipe.transformer.dtype

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        scale = (sigma**2 + 1).rsqrt()
        timestep = (sigma.atan() / math.pi * 2).reshape(1).to(x.device, dtype)
        model_in = (x * scale).to(dtype)
        if guided:
            model_in = torch.cat([model_in, model_in])
        v = pipe.transformer(
            model_in,
            timestep,
            encoder_hidden_states=cross,
            global_hidden_states=global_states,
            rotary_embedding=rotary,
            return_dict=False,
        )[0].float()
        if guided:
            unconditional, conditional = v.chunk(2)
            v = unconditional + request.cfg_scale * (conditional - unconditional)
        return x * scale**2 - v * sigma * scale

    return denoise


def _conditioning(pipe: StableAudioPipeline, request: Request, guided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention states (prompt and timing) and global states (timing) for the batch, with the
    unconditional half first when guided: the negative prompt's, or zeros without one (as
    diffusers and stable-audio-tools both do)."""
    negative = [request.negative_prompt] if guided and request.negative_prompt else None
    device = pipe.device
    text = pipe.encode_prompt([request.prompt], device, guided, negative)
    start, end = pipe.encode_duration(request.seconds_start, request.seconds_total, device, negative is not None, 1)
    cross = torch.cat([text, start, end], dim=1)
    global_states = torch.cat([start, end], dim=2)
    if guided and negative is None:
        cross = torch.cat([torch.zeros_like(cross), cross])
        global_states = torch.cat([global_states, global_states])
    # Rows are [unconditional, conditional]; the latent batch is doubled the same way.
    return cross.repeat_interleave(request.batch_size, 0), global_states.repeat_interleave(request.batch_size, 0)
