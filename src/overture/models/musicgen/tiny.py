"""Tiny random MusicGen checkpoints with the real architectures, written offline.

Each directory looks like a hub snapshot of ``facebook/musicgen-*`` (config.json with the real
text encoder / EnCodec / decoder structure, safetensors weights, generation config, tokenizer)
and loads through the same code path as the real weights. The widths are shrunk so that a 30 s
clip takes seconds on a CPU, and the random weights are drawn so that, as in a trained model, the
text, the melody and the codes all change what comes out. The T5 tokenizer is built in code:
nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from overture.models.musicgen.checkpoint import BOS_TOKEN, CODEBOOK_SIZE
from overture.models.tokenizers import t5_tokenizer

# facebook/encodec_32khz: 32 kHz, hop 8*5*4*4 = 640 samples (50 frames/s), 4 codebooks of 2048 at
# 2.2 kbps. The tiny codec keeps that structure and only thins the convolutions.
_TINY_ENCODEC: dict[str, Any] = {
    "sampling_rate": 32000,
    "audio_channels": 1,
    "upsampling_ratios": [8, 5, 4, 4],
    "target_bandwidths": [2.2],
    "codebook_size": CODEBOOK_SIZE,
    "chunk_length_s": None,
    "normalize": False,
    "use_causal_conv": False,
    "pad_mode": "reflect",
    "norm_type": "weight_norm",
    "num_filters": 4,
    "hidden_size": 16,
    "codebook_dim": 16,
    "num_lstm_layers": 1,
}
# t5-base's encoder shape, shrunk.
_TINY_T5: dict[str, Any] = {
    "vocab_size": 512,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "relu",
}
_TINY_DECODER: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "ffn_dim": 64,
    "vocab_size": CODEBOOK_SIZE,
    "max_position_embeddings": 2048,
    "pad_token_id": BOS_TOKEN,
    "bos_token_id": BOS_TOKEN,
    # At the usual 0.02 the logits of a model this narrow are nearly flat, and what it samples
    # hardly depends on its text or melody; larger weights make the conditioning audible.
    "initializer_factor": 0.5,
}


def write_tiny_checkpoint(path: Path) -> None:
    """``facebook/musicgen-small``'s architecture (mono, 4 codebooks, cross-attended text), tiny."""
    _write(path, stereo=False, melody=False)


def write_tiny_stereo_checkpoint(path: Path) -> None:
    """``facebook/musicgen-stereo-*``: 8 interleaved codebooks decoded as left and right."""
    _write(path, stereo=True, melody=False)


def write_tiny_melody_checkpoint(path: Path) -> None:
    """``facebook/musicgen-melody``: chroma and text enter the decoder as a prefix."""
    _write(path, stereo=False, melody=True)


def write_tiny_stereo_melody_checkpoint(path: Path) -> None:
    """``facebook/musicgen-stereo-melody-*``: both of the above."""
    _write(path, stereo=True, melody=True)


def _write(path: Path, *, stereo: bool, melody: bool) -> None:
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
        T5Config,
    )

    decoder_config = (MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig)(
        num_codebooks=8 if stereo else 4, audio_channels=2 if stereo else 1, **_TINY_DECODER
    )
    text_encoder = T5Config(**_TINY_T5).to_dict()
    audio_encoder = EncodecConfig(**_TINY_ENCODEC).to_dict()
    decoder = decoder_config.to_dict()
    model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
    # Same weights every time, without disturbing the caller's random state.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if melody:
            melody_config = MusicgenMelodyConfig(
                num_chroma=12,
                chroma_length=235,
                text_encoder=text_encoder,
                audio_encoder=audio_encoder,
                decoder=decoder,
            )
            model = MusicgenMelodyForConditionalGeneration(melody_config).eval()
        else:
            config = MusicgenConfig(text_encoder=text_encoder, audio_encoder=audio_encoder, decoder=decoder)
            model = MusicgenForConditionalGeneration(config).eval()
        _make_codec_audible(model.audio_encoder)
    generation = model.generation_config
    # As in the hub's generation_config.json, so that plain ``generate`` works on it too.
    generation.decoder_start_token_id = generation.pad_token_id = generation.bos_token_id = BOS_TOKEN
    generation.do_sample, generation.guidance_scale, generation.max_length = True, 3.0, 1500
    model.save_pretrained(path)
    t5_tokenizer().save_pretrained(path)


def _make_codec_audible(codec: Any) -> None:
    """Give the random codec what training would. EnCodec starts its codebooks at zero, so every
    code would decode to the same sound: draw them. Random biases make a loud fixed pattern (and
    DC) that drowns what the codes say: zero them. What is left is quiet: raise the last gain."""
    import torch

    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
        for name, parameter in codec.decoder.named_parameters():
            if "bias" in name:
                parameter.zero_()
        codec.decoder.layers[-1].conv.parametrizations.weight.original0.mul_(50.0)  # weight norm's g
