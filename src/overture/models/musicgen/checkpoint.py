"""A loaded MusicGen checkpoint and the few operations generation needs from it.

Works for every ``facebook/musicgen-*`` layout transformers knows: mono or stereo (8 codebooks,
even ones left, odd ones right, through a mono EnCodec), text by cross-attention or, for the
melody models, text and chroma as a prefix of the decoder's input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from overture.models.musicgen.chroma import ChromaExtractor

CODEBOOK_SIZE = 2048
#: MusicGen's start token and the padding of its delay pattern: one past the last code.
BOS_TOKEN = CODEBOOK_SIZE


class MusicgenCheckpoint:
    def __init__(self, model: Any, tokenizer: Any, source: Path):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        config = model.config
        self.melody = config.model_type == "musicgen_melody"
        self.channels: int = config.decoder.audio_channels
        self.num_codebooks: int = config.decoder.num_codebooks
        self.sample_rate: int = config.audio_encoder.sampling_rate
        self.frame_rate: int = config.audio_encoder.frame_rate
        self.hop_length = int(np.prod(config.audio_encoder.upsampling_ratios))
        #: Codebook k lags k frames (stereo: each left/right pair shares a lag).
        self.delays = torch.arange(self.num_codebooks) // self.channels
        self.max_delay = int(self.delays.max())
        self.chroma = ChromaExtractor(self.sample_rate, config.num_chroma) if self.melody else None
        self.chroma_length: int = config.chroma_length if self.melody else 0

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def frames(self, seconds: float) -> int:
        return round(seconds * self.frame_rate)

    # -- conditioning ------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_text(self, text: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder-sized text states (tokens, hidden) and their mask; no text is audiocraft's null
        condition: zero states, masked out."""
        if text is None:
            states = torch.zeros(1, self.model.config.decoder.hidden_size, device=self.device, dtype=self.dtype)
            return states, torch.zeros(1, dtype=torch.long, device=self.device)
        tokens = self.tokenizer([text], return_tensors="pt").to(self.device)
        mask = tokens.attention_mask
        states = self.model.text_encoder(input_ids=tokens.input_ids, attention_mask=mask).last_hidden_state
        project = getattr(self.model, "enc_to_dec_proj", None)
        if project is not None:
            states = project(states)
        return (states * mask[..., None])[0], mask[0]

    @torch.inference_mode()
    def melody_prefixes(self, text: torch.Tensor, chroma: torch.Tensor | None, guided: bool) -> torch.Tensor:
        """Melody models' decoder prefix for one generation, (rows, chroma_length + tokens,
        hidden): chroma then text; with guidance a second, unconditional row as transformers
        builds it (the null chroma and zero text)."""
        rows = [torch.cat([self._chroma_states(chroma), text])]
        if guided:
            rows.append(torch.cat([self._chroma_states(None), torch.zeros_like(text)]))
        return torch.stack(rows)

    def _chroma_states(self, chroma: torch.Tensor | None) -> torch.Tensor:
        """One-hot chroma frames → the decoder's prefix, repeated or cut to ``chroma_length``.
        None is the null melody: pitch class 0 everywhere."""
        if chroma is None:
            chroma = torch.zeros(1, self.model.config.num_chroma)
            chroma[:, 0] = 1
        chroma = chroma.to(self.device, self.dtype)
        project = getattr(self.model, "audio_enc_to_dec_proj", None)
        states = project(chroma) if project is not None else chroma
        repeats = -(-self.chroma_length // states.shape[0])
        return states.repeat(repeats, 1)[: self.chroma_length]

    # -- audio codes ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (channels, samples) at the model's rate and channel count → codes (codebooks, frames)."""
        codec = self.model.audio_encoder
        per_channel = [
            codec.encode(channel[None, None].to(self.device, self.dtype)).audio_codes[0, 0] for channel in audio
        ]
        # Stereo interleaves the channels' codebooks: L0 R0 L1 R1 ...
        return torch.stack(per_channel, dim=1).reshape(self.num_codebooks, -1)

    @torch.inference_mode()
    def decode_audio(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (codebooks, frames), on any device → float32 audio (channels, samples) on the CPU."""
        codec = self.model.audio_encoder
        # The loop keeps finished codes on the CPU; the codec's embedding lookup needs them beside it.
        codes = codes.to(self.device)
        channels = [codes[c :: self.channels] for c in range(self.channels)]
        audio = [codec.decode(c[None, None], [None]).audio_values[0, 0] for c in channels]
        return torch.stack(audio).float().cpu()


def load_checkpoint(directory: Path, device: str, dtype: torch.dtype) -> MusicgenCheckpoint:
    """Load a ``facebook/musicgen-*`` snapshot (or a tiny one) from a local directory."""
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    config = AutoConfig.from_pretrained(directory)
    model_class = (
        MusicgenMelodyForConditionalGeneration
        if config.model_type == "musicgen_melody"
        else MusicgenForConditionalGeneration
    )
    # transformers decorates PreTrainedModel.to with functools.wraps, whose type loses the bound self.
    model = model_class.from_pretrained(directory, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
    return MusicgenCheckpoint(model, AutoTokenizer.from_pretrained(directory), directory)
