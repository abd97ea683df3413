"""Streamed EnCodec decode vs one-shot: error and compute overhead.

For the tiny mono and stereo checkpoints and for facebook/encodec_32khz's real configuration with
random weights, decode random codes one-shot and chunk by chunk (frames fed one at a time), and
print max |error| and SNR (dB) of the joined chunks against the one-shot decode:
``ChunkedDecoder`` (black-box overlap) over a grid of context/lookahead, and ``EncodecStream``
(LSTM state carried). Random LSTM weights forget fast; a trained one may not, so the real config is
also run with the LSTM's forget-gate biases raised (longer memory). Then the time to decode a 30 s
clip one-shot and streamed on the real config.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/streaming_decode.py [--quick] [--part overhead]
        [--frames N] [--overhead-seconds 30]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from _machine import machine_line
from overture.models.musicgen.checkpoint import load_checkpoint
from overture.models.musicgen.streaming import ChunkedDecoder, EncodecStream, StreamDecoder
from overture.testing import tiny_checkpoint

# facebook/encodec_32khz's config.json (as transformers' convert_musicgen_transformers.py builds it).
ENCODEC_32KHZ: dict[str, Any] = {
    "audio_channels": 1, "chunk_length_s": None, "codebook_dim": 128, "codebook_size": 2048, "compress": 2,
    "dilation_growth_rate": 2, "hidden_size": 128, "kernel_size": 7, "last_kernel_size": 7,
    "norm_type": "weight_norm", "normalize": False, "num_filters": 64, "num_lstm_layers": 2,
    "num_residual_layers": 1, "overlap": None, "pad_mode": "reflect", "residual_kernel_size": 3,
    "sampling_rate": 32000, "target_bandwidths": [2.2], "trim_right_ratio": 1.0, "upsampling_ratios": [8, 5, 4, 4],
    "use_causal_conv": False, "use_conv_shortcut": False,
}  # fmt: skip


def stream(decoder: StreamDecoder, codes: torch.Tensor) -> torch.Tensor:
    """Feed frames one at a time, as a decoding loop would, and join what comes out."""
    chunks = []
    for t in range(1, codes.shape[-1] + 1):
        chunks += decoder.feed(codes[:, :t])
    chunks += decoder.finish()
    return torch.cat(chunks, -1)


def error(audio: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    assert audio.shape == reference.shape, (audio.shape, reference.shape)
    diff = audio - reference
    noise = diff.pow(2).sum().item()
    snr = math.inf if noise == 0 else 10 * math.log10(reference.pow(2).sum().item() / noise)
    return diff.abs().max().item(), snr


def table(
    name: str,
    decode: Callable[[torch.Tensor], torch.Tensor],
    exact: Callable[[], StreamDecoder],
    codes: torch.Tensor,
    hop: int,
    contexts: list[int],
    lookaheads: list[int],
) -> None:
    reference = decode(codes)
    print(f"\n{name}: {codes.shape[-1]} frames, chunk 50, peak |audio| {reference.abs().max():.3f}")
    print("max |err| / SNR dB   " + "".join(f"lookahead {la:<10d}" for la in lookaheads))
    for context in contexts:
        cells = []
        for lookahead in lookaheads:
            peak, snr = error(stream(ChunkedDecoder(decode, hop, 50, context, lookahead), codes), reference)
            cells.append(f"{peak:.1e} / {snr:5.1f}  ".ljust(20))
        print(f"context {context:<12d}" + "".join(cells), flush=True)
    peak, snr = error(stream(exact(), codes), reference)
    print(f"EncodecStream        {peak:.1e} / {snr:5.1f}", flush=True)


def tiny(frames: int) -> None:
    for family in ("musicgen", "musicgen-stereo"):
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = load_checkpoint(tiny_checkpoint(family, directory), "cpu", torch.float32)
        codes = torch.randint(0, 2048, (checkpoint.num_codebooks, frames), generator=torch.Generator().manual_seed(0))
        codec = checkpoint.model.audio_encoder
        table(
            f"tiny {family}",
            checkpoint.decode_audio,
            lambda codec=codec, channels=checkpoint.channels: EncodecStream(codec, channels),
            codes,
            checkpoint.hop_length,
            [0, 4, 8, 16, 24, 32, 48],
            [0, 3, 4, 5],
        )


def real_codec() -> Any:
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    codec = EncodecModel(EncodecConfig(**ENCODEC_32KHZ)).eval()
    with torch.no_grad():  # transformers starts codebooks at zero: every code would sound alike
        for layer in codec.quantizer.layers:
            layer.codebook.embed.normal_()
    return codec


def real(frames: int) -> None:
    codec = real_codec()
    lstm = codec.decoder.layers[1].lstm
    original = {name: p.detach().clone() for name, p in lstm.named_parameters()}

    @torch.inference_mode()
    def decode(codes: torch.Tensor) -> torch.Tensor:
        return codec.decode(codes[None, None], [None]).audio_values[0]

    codes = torch.randint(0, 2048, (4, frames), generator=torch.Generator().manual_seed(0))
    for forget in (0.0, 1.0, 2.0):
        with torch.no_grad():  # forget gate = second quarter of the LSTM's biases
            for name, parameter in lstm.named_parameters():
                parameter.copy_(original[name])
                if name.startswith("bias_ih"):
                    parameter[lstm.hidden_size : 2 * lstm.hidden_size] += forget
        contexts = [0, 8, 16, 24, 32, 48] if forget == 0 else [16, 32, 64, 128]
        table(
            f"encodec_32khz random weights, forget-gate bias +{forget:g}",
            decode,
            lambda: EncodecStream(codec, 1),
            codes,
            640,
            contexts,
            [3, 4, 5] if forget == 0 else [5],
        )


def overhead(rounds: int, seconds: int) -> None:
    codec = real_codec()

    @torch.inference_mode()
    def decode(codes: torch.Tensor) -> torch.Tensor:
        return codec.decode(codes[None, None], [None]).audio_values[0]

    frames = 50 * seconds
    codes = torch.randint(0, 2048, (4, frames), generator=torch.Generator().manual_seed(1))
    decode(codes[:, :50])  # warm-up
    margin = EncodecStream.MARGIN
    # name, work, frames through the upsampling stack (most of the cost)
    makers: list[tuple[str, Callable[[], object], int]] = [
        ("one-shot", lambda: decode(codes), frames),
        ("EncodecStream chunk 50", lambda: stream(EncodecStream(codec, 1, 50), codes), _work(frames, 50, margin, margin, margin + 3)),
        ("EncodecStream chunk 25", lambda: stream(EncodecStream(codec, 1, 25), codes), _work(frames, 25, margin, margin, margin + 3)),
        ("ChunkedDecoder chunk 50, context 32, lookahead 5", lambda: stream(ChunkedDecoder(decode, 640, 50, 32, 5), codes), _work(frames, 50, 32, 5, 5)),
        ("ChunkedDecoder chunk 100, context 32, lookahead 5", lambda: stream(ChunkedDecoder(decode, 640, 100, 32, 5), codes), _work(frames, 100, 32, 5, 5)),
    ]  # fmt: skip
    # Interleaved rounds, best of each: the machine is shared, and load drifts.
    best = {name: math.inf for name, _, _ in makers}
    for _ in range(rounds):
        for name, work, _ in makers:
            best[name] = min(best[name], _timed(work))
    threads = torch.get_num_threads()
    print(f"\n{seconds} s clip ({frames} frames), real config, {threads} thread(s), best of {rounds} interleaved:")
    for name, _, work in makers:
        took = best[name]
        print(f"{name:<52}{took:6.2f} s  x{took / best['one-shot']:.2f}  frames decoded x{work / frames:.2f}")
    # What one chunk costs the decoding loop that calls feed() inline.
    decoder, times = EncodecStream(codec, 1, 50), []
    for t in range(1, codes.shape[-1] + 1):
        start = time.perf_counter()
        if decoder.feed(codes[:, :t]):
            times.append(time.perf_counter() - start)
    times.sort()
    print(f"EncodecStream: one 1 s chunk per feed() that returns one: median {times[len(times) // 2] * 1000:.0f} ms")


def _work(frames: int, chunk: int, before: int, after: int, lookahead: int) -> int:
    """Frames a streamed decode runs through the (upsampling) decoder, overlap included."""
    total, start = 0, 0
    while frames - start >= chunk + lookahead:
        total += min(frames, start + chunk + after) - max(0, start - before)
        start += chunk
    return total + (frames - max(0, start - before) if start < frames else 0)


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter clips")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", choices=["tiny", "real", "overhead"], action="append", help="default: all")
    parser.add_argument("--frames", type=int, help="codes for tiny and real (default 500; --quick 300 and 250)")
    parser.add_argument("--overhead-seconds", type=int, default=30, help="clip length for the overhead part")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    parts = args.part or ["tiny", "real", "overhead"]
    if "tiny" in parts:
        tiny(args.frames or (300 if args.quick else 500))
    if "real" in parts:
        real(args.frames or (250 if args.quick else 500))
    if "overhead" in parts:
        overhead(2 if args.quick else 5, args.overhead_seconds)


if __name__ == "__main__":
    main()
