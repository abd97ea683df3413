"""Streamed EnCodec decode: the chunks, joined, are the one-shot decode (tiny checkpoints)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from overture.models.musicgen.checkpoint import MusicgenCheckpoint, load_checkpoint
from overture.models.musicgen.streaming import ChunkedDecoder, EncodecStream, StreamDecoder, stream_decoder
from overture.testing import tiny_checkpoint

#: Measured: at most 2.3e-7 on peaks of ~0.4 (float rounding; benchmarks/streaming_decode.py).
TOLERANCE = 1e-5
FAMILIES = ("musicgen", "musicgen-stereo")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MusicgenCheckpoint]:
    root = tmp_path_factory.mktemp("streaming")
    return {family: _load(family, root) for family in FAMILIES}


def _load(family: str, root: Path) -> MusicgenCheckpoint:
    return load_checkpoint(tiny_checkpoint(family, root / family), "cpu", torch.float32)


def _codes(checkpoint: MusicgenCheckpoint, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2048, (checkpoint.num_codebooks, frames), generator=generator)


def _stream(decoder: StreamDecoder, codes: torch.Tensor, steps: list[int] | None = None) -> list[torch.Tensor]:
    """Feed the growing codes (one frame at a time unless ``steps`` says) and finish."""
    chunks: list[torch.Tensor] = []
    for t in steps or range(1, codes.shape[-1] + 1):
        chunks += decoder.feed(codes[:, :t])
    return chunks + decoder.finish()


DECODERS: dict[str, Callable[[MusicgenCheckpoint], StreamDecoder]] = {
    "exact": stream_decoder,
    "overlap": lambda checkpoint: ChunkedDecoder(checkpoint.decode_audio, checkpoint.hop_length),
}


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("frames", [1, 7, 49, 54, 55, 123])
def test_joined_chunks_equal_one_shot(
    checkpoints: dict[str, MusicgenCheckpoint], family: str, kind: str, frames: int
) -> None:
    checkpoint = checkpoints[family]
    codes = _codes(checkpoint, frames)
    reference = checkpoint.decode_audio(codes)
    joined = torch.cat(_stream(DECODERS[kind](checkpoint), codes), -1)
    assert joined.shape == reference.shape == (checkpoint.channels, frames * checkpoint.hop_length)
    assert (joined - reference).abs().max() <= TOLERANCE


def test_exact_decoder_is_used_for_encodec(checkpoints: dict[str, MusicgenCheckpoint]) -> None:
    assert all(isinstance(stream_decoder(checkpoint), EncodecStream) for checkpoint in checkpoints.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_chunks_come_out_while_frames_arrive(checkpoints: dict[str, MusicgenCheckpoint], family: str) -> None:
    checkpoint = checkpoints[family]
    decoder = stream_decoder(checkpoint)
    codes = _codes(checkpoint, 180)
    arrivals = []
    for t in range(1, 181):
        for chunk in decoder.feed(codes[:, :t]):
            arrivals.append(t)
            assert chunk.shape == (checkpoint.channels, decoder.chunk * checkpoint.hop_length)
    # Each chunk as soon as its frames and the lookahead exist: 1 s of audio after 55 frames.
    assert arrivals == [decoder.chunk * k + decoder.lookahead for k in (1, 2, 3)]
    assert decoder.lookahead <= 5
    (rest,) = decoder.finish()
    assert rest.shape[-1] == 30 * checkpoint.hop_length


def test_uneven_feeds_give_the_same_audio(checkpoints: dict[str, MusicgenCheckpoint]) -> None:
    checkpoint = checkpoints["musicgen-stereo"]
    codes = _codes(checkpoint, 260, seed=3)
    one_by_one = torch.cat(_stream(stream_decoder(checkpoint), codes), -1)
    chunks = _stream(stream_decoder(checkpoint), codes, steps=[0, 3, 3, 140, 141, 260])
    assert len(chunks) == 6  # 140 frames at once: two chunks from one feed
    assert (torch.cat(chunks, -1) - one_by_one).abs().max() <= TOLERANCE


def test_the_tolerance_catches_a_naive_split(checkpoints: dict[str, MusicgenCheckpoint]) -> None:
    """Decoding each chunk on its own (no overlap) is far outside the tolerance."""
    checkpoint = checkpoints["musicgen"]
    codes = _codes(checkpoint, 150)
    naive = ChunkedDecoder(checkpoint.decode_audio, checkpoint.hop_length, context=0, lookahead=0)
    error = (torch.cat(_stream(naive, codes), -1) - checkpoint.decode_audio(codes)).abs().max()
    assert error > 100 * TOLERANCE


def test_exact_even_when_the_lstm_remembers_long(tmp_path: Path) -> None:
    """Overlap only works if the LSTM forgets within the context; carrying its state does not
    depend on that. Raised forget-gate biases make the tiny LSTM remember for hundreds of frames."""
    checkpoint = _load("musicgen", tmp_path)
    lstm = checkpoint.model.audio_encoder.decoder.layers[1].lstm
    with torch.no_grad():
        lstm.bias_ih_l0[lstm.hidden_size : 2 * lstm.hidden_size] += 4
    codes = _codes(checkpoint, 200)
    reference = checkpoint.decode_audio(codes)
    exact = torch.cat(_stream(stream_decoder(checkpoint), codes), -1)
    assert (exact - reference).abs().max() <= TOLERANCE
    overlap = ChunkedDecoder(checkpoint.decode_audio, checkpoint.hop_length)
    assert (torch.cat(_stream(overlap, codes), -1) - reference).abs().max() > 100 * TOLERANCE


def test_misuse(checkpoints: dict[str, MusicgenCheckpoint]) -> None:
    checkpoint = checkpoints["musicgen"]
    decoder = stream_decoder(checkpoint)
    assert decoder.finish() == []  # nothing fed: nothing to return
    with pytest.raises(RuntimeError):
        decoder.feed(_codes(checkpoint, 3))
    decoder = stream_decoder(checkpoint)
    decoder.feed(_codes(checkpoint, 3))
    with pytest.raises(ValueError):
        decoder.feed(_codes(checkpoint, 2))
    with pytest.raises(ValueError):
        ChunkedDecoder(checkpoint.decode_audio, checkpoint.hop_length, chunk=0)
