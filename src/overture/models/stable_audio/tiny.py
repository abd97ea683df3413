"""A tiny random Stable Audio Open checkpoint with the real architecture and layout, built offline.

The shapes that matter to serving are the real ones: 44.1 kHz stereo, the Oobleck VAE's 2048×
downsampling, a 1024-frame (47.55 s) window, T5 prompts of up to 128 tokens and timing
conditioning over 0–512 s. Only the widths and depths are small, so it loads through the same
``from_pretrained`` path as ``stabilityai/stable-audio-open-1.0`` and generates in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch

# From the defining modules: the names ``diffusers`` exports are, to a type checker, dummy placeholders.
from diffusers.models.autoencoders.autoencoder_oobleck import AutoencoderOobleck
from diffusers.models.transformers.stable_audio_transformer import StableAudioDiTModel
from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
from diffusers.pipelines.stable_audio.pipeline_stable_audio import StableAudioPipeline
from diffusers.schedulers.scheduling_cosine_dpmsolver_multistep import CosineDPMSolverMultistepScheduler
from transformers import T5Config, T5EncoderModel

from overture.models.tokenizers import t5_tokenizer

_LATENT_CHANNELS = 8
_CONDITIONING = 16


def write_tiny_checkpoint(path: Path) -> None:
    """Save a tiny random ``StableAudioPipeline`` (about 0.4 MB) into ``path``."""
    torch.manual_seed(0)
    # Stable Audio Open pads and truncates prompts to 128 tokens.
    tokenizer = t5_tokenizer(model_max_length=128)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="relu",
        )
    )
    projection = StableAudioProjectionModel(
        text_encoder_dim=32, conditioning_dim=_CONDITIONING, min_value=0, max_value=512
    )
    transformer = StableAudioDiTModel(
        sample_size=1024,
        in_channels=_LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=_LATENT_CHANNELS,
        cross_attention_dim=16,
        time_proj_dim=16,
        global_states_input_dim=2 * _CONDITIONING,
        cross_attention_input_dim=_CONDITIONING,
    )
    vae = AutoencoderOobleck(
        encoder_hidden_size=4,
        downsampling_ratios=[2, 4, 4, 8, 8],
        channel_multiples=[1, 2, 2, 2, 2],
        decoder_channels=4,
        decoder_input_channels=_LATENT_CHANNELS,
        audio_channels=2,
        sampling_rate=44100,
    )
    # The real checkpoint's scheduler config; Overture samples with k-diffusion's samplers instead,
    # but the pipeline layout includes it.
    scheduler = CosineDPMSolverMultistepScheduler(
        sigma_min=0.3,
        sigma_max=500,
        sigma_data=1.0,
        sigma_schedule="exponential",
        solver_order=2,
        prediction_type="v_prediction",
        rho=7.0,
        solver_type="midpoint",
    )
    StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    ).save_pretrained(path)
