"""Decode MusicGen's codes to audio chunk by chunk while they are generated.

EnCodec's decoder is not causal: a convolution before its LSTM looks 3 frames ahead, the
upsampling stack after it about 1 frame either way, and each edge of a decoded window is
reflect-padded. Its LSTM runs forward and carries state from the first frame. So a chunk decoded
on its own differs from the same frames of the one-shot decode near its edges (conv padding) and
everywhere after its start (the LSTM starts from zero state).

Two decoders with one interface (``feed`` the growing codes, ``finish`` at the end, each returns
the audio chunks that became final):

- ``EncodecStream`` splits EnCodec's decoder at the LSTM and carries the LSTM's state from chunk to
  chunk, so it reproduces the one-shot decode up to float rounding (~1e-7) whatever the weights,
  with 5 frames of lookahead and ~8 % extra compute. ``stream_decoder`` picks it when it can.
- ``ChunkedDecoder`` wraps any decode function: each chunk is decoded with ``context`` frames
  before it and ``lookahead`` after it and only its middle kept. Its conv error vanishes with 4
  frames of lookahead; its LSTM error decays with context only as fast as the LSTM forgets, which
  for random weights is quick (float noise after ~30 frames) but for an LSTM with long memory may
  never reach zero (see benchmarks/RESULTS.md, "Streaming EnCodec decode").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from overture.models.musicgen.checkpoint import MusicgenCheckpoint

#: Codes (codebooks, frames) → float audio (channels, frames * hop_length).
DecodeFn = Callable[[torch.Tensor], torch.Tensor]

#: 1 s at MusicGen's 50 Hz: a listener gets audio every second, and each decode call is long
#: enough that the per-call overhead is small.
DEFAULT_CHUNK = 50


class StreamDecoder:
    """Bookkeeping shared by both decoders: which frames have been returned, when the next chunk
    is ready (``chunk`` frames plus ``lookahead`` more exist), and the exact total length."""

    def __init__(self, hop_length: int, chunk: int, lookahead: int):
        if chunk < 1 or lookahead < 0 or hop_length < 1:
            raise ValueError(f"bad sizes: chunk {chunk}, lookahead {lookahead}, hop {hop_length}")
        self.hop_length = hop_length
        self.chunk = chunk
        self.lookahead = lookahead
        self._codes: torch.Tensor | None = None
        #: Frames whose audio has been returned.
        self.done = 0
        self._finished = False

    @property
    def frames(self) -> int:
        """Frames fed so far."""
        return 0 if self._codes is None else self._codes.shape[-1]

    def feed(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """All final codes so far (codebooks, frames), each call extending the last → the audio
        chunks (channels, samples) that became final, in order; usually none or one."""
        if self._finished:
            raise RuntimeError("feed after finish")
        if codes.shape[-1] < self.frames:
            raise ValueError(f"codes shrank from {self.frames} to {codes.shape[-1]} frames")
        self._codes = codes
        chunks = []
        while self.frames - self.done >= self.chunk + self.lookahead:
            chunks.append(self._decode(self.done, self.done + self.chunk, final=False))
            self.done += self.chunk
        return chunks

    def finish(self) -> list[torch.Tensor]:
        """The rest of the audio (at most one chunk), so that all chunks together are exactly
        ``frames * hop_length`` samples long."""
        if self._finished:
            raise RuntimeError("finish called twice")
        self._finished = True
        if self.done == self.frames:
            return []
        chunk = self._decode(self.done, self.frames, final=True)
        self.done = self.frames
        return [chunk]

    def _decode(self, start: int, end: int, final: bool) -> torch.Tensor:
        """Audio of frames [start, end); ``final``: no more frames will come."""
        raise NotImplementedError


class ChunkedDecoder(StreamDecoder):
    """Overlapped chunks through any decode function: decode ``context`` frames before the chunk
    and ``lookahead`` after it, keep the middle. Exact at the clip's own edges; in between, the
    error is what ``context`` frames leave of the LSTM's memory of earlier frames."""

    def __init__(
        self,
        decode: DecodeFn,
        hop_length: int,
        chunk: int = DEFAULT_CHUNK,
        context: int = 32,
        lookahead: int = 5,
    ):
        super().__init__(hop_length, chunk, lookahead)
        if context < 0:
            raise ValueError(f"bad context {context}")
        self._decode_fn = decode
        self.context = context

    def _decode(self, start: int, end: int, final: bool) -> torch.Tensor:
        assert self._codes is not None
        first = max(0, start - self.context)
        last = self.frames if final else end + self.lookahead
        audio = self._decode_fn(self._codes[:, first:last])
        return audio[:, (start - first) * self.hop_length : (end - first) * self.hop_length]


class EncodecStream(StreamDecoder):
    """Exact streaming through transformers' ``EncodecModel``: codes → embeddings → first conv →
    LSTM run once per frame with its state carried over → upsampling stack on overlapping windows
    of the LSTM's output. Channels (stereo: even and odd codebooks) go through as a batch."""

    #: Frames of LSTM output each side of a chunk that the upsampling stack needs to be exact
    #: (it reaches about one frame; the second is margin).
    MARGIN = 2

    def __init__(self, codec: Any, channels: int, chunk: int = DEFAULT_CHUNK):
        layers = codec.decoder.layers
        first = layers[0]
        #: How far the first conv looks each way (kernel 7, stride 1: 3 and 3).
        padding = int(first.padding_total)
        self._reach_right = padding // 2
        self._reach_left = padding - self._reach_right
        super().__init__(_hop_length(codec), chunk, self.MARGIN + self._reach_right)
        self._codec = codec
        self._channels = channels
        self._first = first
        self._lstm: torch.nn.LSTM = layers[1].lstm
        self._upsample = layers[2:]
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        #: LSTM output (channels, hidden, frames) from frame ``_kept`` up to the frontier.
        self._features: torch.Tensor | None = None
        self._kept = 0

    @property
    def _frontier(self) -> int:
        """Frames whose LSTM output is computed."""
        return self._kept + (0 if self._features is None else self._features.shape[-1])

    @torch.inference_mode()
    def _decode(self, start: int, end: int, final: bool) -> torch.Tensor:
        self._advance(self.frames if final else end + self.MARGIN, final)
        assert self._features is not None
        first = max(self._kept, start - self.MARGIN)
        last = self._frontier if final else end + self.MARGIN
        hidden = self._features[..., first - self._kept : last - self._kept]
        for layer in self._upsample:
            hidden = layer(hidden)
        audio = hidden[:, 0, (start - first) * self.hop_length : (end - first) * self.hop_length]
        # Drop what the next chunk's left margin no longer needs.
        drop = max(0, end - self.MARGIN - self._kept)
        self._features = self._features[..., drop:]
        self._kept += drop
        return audio.float().cpu()

    def _advance(self, upto: int, final: bool) -> None:
        """Run the first conv and the LSTM over frames [frontier, upto)."""
        begin = self._frontier
        if upto <= begin:
            return
        assert self._codes is not None
        first = max(0, begin - self._reach_left)
        last = self.frames if final else upto + self._reach_right
        codes = self._codes[:, first:last].to(self._codec.device)
        # (codebooks, frames) → (quantizers, channels, frames): stereo interleaves L0 R0 L1 R1 ...
        codes = codes.reshape(-1, self._channels, codes.shape[-1])
        embeddings = self._codec.quantizer.decode(codes)
        steps = self._first(embeddings)[..., begin - first : upto - first].permute(2, 0, 1)
        output, self._state = self._lstm(steps, self._state)
        features = (output + steps).permute(1, 2, 0)  # EncodecLSTM's residual
        self._features = features if self._features is None else torch.cat([self._features, features], -1)


def stream_decoder(checkpoint: MusicgenCheckpoint, chunk: int = DEFAULT_CHUNK) -> StreamDecoder:
    """The exact ``EncodecStream`` when the checkpoint's codec has the layout it relies on, else
    ``ChunkedDecoder`` over ``checkpoint.decode_audio``."""
    codec = checkpoint.model.audio_encoder
    if _streamable(codec):
        return EncodecStream(codec, checkpoint.channels, chunk)
    return ChunkedDecoder(checkpoint.decode_audio, checkpoint.hop_length, chunk)


def _streamable(codec: Any) -> bool:
    """EnCodec whose decode is plain ``decoder(quantizer.decode(codes))``, with conv, LSTM, then
    upsampling layers, as transformers 5 builds it (any other codec takes the generic path)."""
    try:
        from transformers.models.encodec.modeling_encodec import EncodecConv1d, EncodecLSTM, EncodecModel
    except ImportError:
        return False
    if not isinstance(codec, EncodecModel):
        return False
    config = codec.config
    layers = codec.decoder.layers
    return (
        config.chunk_length is None
        and not config.normalize
        and len(layers) > 2
        and isinstance(layers[0], EncodecConv1d)
        and int(layers[0].stride) == 1
        and isinstance(layers[1], EncodecLSTM)
    )


def _hop_length(codec: Any) -> int:
    hop = 1
    for ratio in codec.config.upsampling_ratios:
        hop *= ratio
    return hop
