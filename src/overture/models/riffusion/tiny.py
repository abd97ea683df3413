"""A tiny random Riffusion checkpoint: Stable Diffusion 1.5's layout and shapes, built offline.

What serving depends on is real: 512×512 RGB images, an 8× VAE with 4 latent channels and SD's
scaling factor, 77-token CLIP prompts and riffusion-model-v1's PNDM scheduler. Widths and depths
are small, so it loads through the same ``from_pretrained`` path as ``riffusion/riffusion-model-v1``
and runs a step in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

# From the defining modules: the names ``diffusers`` exports are, to a type checker, dummy placeholders.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from transformers import CLIPTextConfig, CLIPTextModel

from overture.models.tokenizers import clip_tokenizer

_TEXT_WIDTH = 32


def write_tiny_checkpoint(path: Path) -> None:
    """Save a tiny random ``StableDiffusionPipeline`` (no safety checker) into ``path``."""
    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=_TEXT_WIDTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=4,
        cross_attention_dim=_TEXT_WIDTH,
        norm_num_groups=8,
        # SD 1.5 attends at 64×64 too; the tiny one only at 32×32, where attention costs 16× less.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        # diffusers annotates these two as required, yet lists them in `_optional_components`.
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    ).save_pretrained(path)
