"""Stable Audio Open at real size (random weights): the trimmed latent Overture denoises against
the full 47.55 s window diffusers' pipeline always denoises, in one run.

Both paths run ``overture.models.stable_audio.generate.generate`` with the same request; the full
window is ``frames=window_frames(pipe)`` (1024 latent frames), the trimmed one the default
(``seconds + 1`` s of latent). Per path: DiT seconds per step (CFG doubles its batch), the VAE
decode, the total, and the integrated loudness of the kept part. The weights are random (the real
checkpoint is gated), so only the timings mean anything, and the loudness only shows both paths
produce comparable audio.

    .venv/bin/python benchmarks/stable_audio.py [--seconds 5] [--steps 2] [--shape real|smoke]

``--shape smoke`` runs the tiny test checkpoint instead, for smoke runs (timings mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pyloudnorm
import torch
from diffusers import AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from transformers import T5Config, T5EncoderModel

from _machine import machine_line
from overture.models.stable_audio.generate import frames_for, generate, sample_rate, window_frames
from overture.models.stable_audio.request import Request
from overture.models.tokenizers import t5_tokenizer
from overture.testing import tiny_checkpoint

T5_BASE = {"d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12, "feed_forward_proj": "relu"}


def real_size_pipeline() -> StableAudioPipeline:
    """stabilityai/stable-audio-open-1.0's architecture (the diffusers classes' defaults are its
    config), with the layers' own random initialization: activations keep their scale, so no
    denormal floats slow the arithmetic down."""
    torch.manual_seed(0)
    return StableAudioPipeline(
        vae=AutoencoderOobleck().eval(),
        text_encoder=T5EncoderModel(T5Config(**T5_BASE)).eval(),
        projection_model=StableAudioProjectionModel(768, 768, 0, 512).eval(),
        tokenizer=t5_tokenizer(model_max_length=128),
        transformer=StableAudioDiTModel().eval(),
        scheduler=CosineDPMSolverMultistepScheduler(),
    )


def smoke_pipeline() -> StableAudioPipeline:
    """The tiny test checkpoint: the same classes, small enough for a smoke run."""
    directory = tiny_checkpoint("stable-audio", tempfile.mkdtemp(prefix="stable-audio-"))
    return StableAudioPipeline.from_pretrained(directory)


def run(pipe: StableAudioPipeline, request: Request, frames: int) -> dict[str, float]:
    marks: list[float] = []
    started = time.perf_counter()
    audio = generate(pipe, request, lambda step: marks.append(time.perf_counter()), frames=frames)
    finished = time.perf_counter()
    steps = [b - a for a, b in zip([started, *marks], marks, strict=False)]
    loudness = pyloudnorm.Meter(sample_rate(pipe)).integrated_loudness(audio[0].T.double().numpy())
    return {
        "frames": frames,
        "audio_s": frames * pipe.vae.hop_length / sample_rate(pipe),
        "first_step_s": steps[0],
        "step_s": statistics.median(steps[1:] or steps),
        "decode_s": finished - marks[-1],
        "total_s": finished - started,
        "lufs": loudness,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds_total of the request")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--shape", choices=["real", "smoke"], default="real", help="smoke: tiny, timings mean nothing")
    args = parser.parse_args()

    started = time.perf_counter()
    pipe = real_size_pipeline() if args.shape == "real" else smoke_pipeline()
    built = time.perf_counter() - started
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e6
    request = Request("ambient soundscape with ethereal pads", seconds_total=args.seconds, steps=args.steps, seed=0)

    print(f"{machine_line()}, fp32")
    print(f"DiT {params:.4g} M parameters ({args.shape}), built with random weights in {built:.1f} s")
    print(f"request: seconds_total {args.seconds}, {args.steps} steps, dpmpp-3m-sde, cfg 6 (DiT batch 2)")
    results = {
        "trimmed": run(pipe, request, frames_for(pipe, args.seconds + 1)),
        "full window": run(pipe, request, window_frames(pipe)),
    }
    for name, r in results.items():
        print(
            f"{name:11s}: {r['frames']:4d} latent frames ({r['audio_s']:5.2f} s) | step {r['step_s']:6.2f} s "
            f"(first {r['first_step_s']:.2f} s) | VAE decode {r['decode_s']:6.2f} s | total {r['total_s']:7.2f} s "
            f"| kept part {r['lufs']:.1f} LUFS"
        )
    trimmed, full = results["trimmed"], results["full window"]
    total, step = full["total_s"] / trimmed["total_s"], full["step_s"] / trimmed["step_s"]
    print(f"speed-up: {total:.1f}x in total, {step:.1f}x per step")
    projected = trimmed["step_s"] * 100 + trimmed["decode_s"], full["step_s"] * 100 + full["decode_s"]
    print(f"at the default 100 steps: trimmed ~{projected[0] / 60:.1f} min, full window ~{projected[1] / 60:.1f} min")


if __name__ == "__main__":
    main()
