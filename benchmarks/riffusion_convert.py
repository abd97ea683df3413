"""Riffusion's image → audio step: Overture's fast Griffin-Lim against the straightforward path.

Runs in one go, side by side, on the same 512×512 spectrogram image:
  (a) reference: what riffusion does through torchaudio (>= 2.1), in torch: a least-squares inverse
      mel per call, then 32 Griffin-Lim iterations of full-rate torch.stft/istft (n_fft 17640);
  (b) Overture: ``overture.models.riffusion.spectrogram.audio_from_image`` (cached inverse of the
      mel bank, half-rate iterations in reused buffers, full-rate final synthesis).
Both start from the same random phases. Prints seconds per 5.11 s clip (best and median), the
speed-up, each output's mel spectral convergence against the source audio, and how far apart the
two outputs are.

    .venv/bin/python benchmarks/riffusion_convert.py [--repeats 3] [--threads 2] [--prompt "boom bap hip hop beat"]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from _machine import machine_line
from overture.models.riffusion.spectrogram import (
    SpectrogramParams,
    audio_from_image,
    converter,
    image_from_audio,
    mel_from_image,
    reference_audio_from_mel,
)
from overture.models.synth.prompt import parse_prompt
from overture.models.synth.render import SAMPLE_RATE, render

PARAMS = SpectrogramParams()


def source_clip(prompt: str) -> np.ndarray:
    """5.11 s of the built-in synth, mono: audio whose spectrogram image is realistic."""
    seconds = PARAMS.samples_for(512) / SAMPLE_RATE
    return np.concatenate(list(render(parse_prompt(prompt), seconds, seed=1))).mean(axis=1).astype(np.float32)


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, list[float]]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return result, times


def spectral_convergence(source: np.ndarray, rebuilt: np.ndarray) -> float:
    a = converter().mel_from_audio(torch.from_numpy(source))
    b = converter().mel_from_audio(torch.from_numpy(np.ascontiguousarray(rebuilt)))
    a, b = a / a.max(), b / b.max()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(a))


def reference(image: object) -> np.ndarray:
    audio = reference_audio_from_mel(mel_from_image(image), PARAMS, torch.Generator().manual_seed(0)).numpy()
    return audio / np.abs(audio).max() * 10 ** (-0.1 / 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", default="boom bap hip hop beat, 90 bpm, piano")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    source = source_clip(args.prompt)
    image = image_from_audio(source)
    started = time.perf_counter()
    converter()  # the one-off inverse of the mel bank, outside the timed runs
    setup = time.perf_counter() - started

    fast, fast_times = timed(lambda: audio_from_image(image, generator=torch.Generator().manual_seed(0)), args.repeats)
    slow, slow_times = timed(lambda: reference(image), args.repeats)

    print(machine_line())
    print(f"image 512x512 -> {fast.shape[0]} samples ({fast.shape[0] / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz)")
    for name, times in (
        ("reference (torch.stft/istft, lstsq)", slow_times),
        ("overture  (half-rate Griffin-Lim)", fast_times),
    ):
        print(f"{name}: best {min(times):.2f} s, median {statistics.median(times):.2f} s of {len(times)}")
    print(f"speed-up (best): {min(slow_times) / min(fast_times):.1f}x; one-off converter setup {setup:.2f} s")
    print(
        f"mel spectral convergence vs source: reference {spectral_convergence(source, slow):.4f}, "
        f"overture {spectral_convergence(source, fast):.4f}"
    )
    print(f"relative difference overture vs reference: {np.linalg.norm(fast - slow) / np.linalg.norm(slow):.4f}")


if __name__ == "__main__":
    main()
