"""The predictor of ``overture/synth``: a prompt read into an arrangement, rendered section by section
so that cancellation, progress and streaming act between sections."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from overture.models.audio import encode, normalize
from overture.models.base import Context, Predictor
from overture.models.schema import Input
from overture.models.synth.prompt import parse_prompt
from overture.models.synth.render import SAMPLE_RATE, chunk_count, render


class SynthPredictor(Predictor):
    # Pure numpy and stateless: two threads keep both cores of a small machine busy.
    concurrency = 2
    uses_gpu = False

    def predict(
        self,
        ctx: Context,
        prompt: str = Input(
            description="What to play: genre, mood, instruments, tempo ('120 bpm') and key ('in D minor').",
            default=None,
        ),
        duration: float = Input(description="Duration of the generated audio in seconds.", default=8, ge=0.5, le=600),
        seed: int = Input(
            description="Seed for random number generator. If None or -1, a random seed will be used.", default=None
        ),
        output_format: str = Input(
            description="Output format for generated audio.", default="wav", choices=["wav", "mp3"]
        ),
        normalization_strategy: str = Input(
            description="Strategy for normalizing audio.",
            default="loudness",
            choices=["loudness", "clip", "peak", "rms"],
        ),
    ) -> Path:
        if seed is None or seed < 0:
            seed = secrets.randbelow(2**31)
        ctx.log(f"Using seed: {seed}")
        arrangement = parse_prompt(prompt)
        ctx.log(f"Arrangement: {arrangement.describe()}")
        total = chunk_count(arrangement, duration)
        chunks = []
        for done, chunk in enumerate(render(arrangement, duration, seed), start=1):
            ctx.check_canceled()
            chunks.append(chunk)
            if ctx.streaming:
                # Each finished section streams as its own file, before the whole is normalized.
                section = ctx.scratch_path(f"section-{done:03d}.{output_format}")
                section.write_bytes(encode(np.clip(chunk, -1, 1), SAMPLE_RATE, output_format))
                ctx.partial(section)
            ctx.progress(done, total)
        audio = normalize(np.concatenate(chunks), SAMPLE_RATE, normalization_strategy)
        path = ctx.scratch_path(f"output.{output_format}")
        path.write_bytes(encode(audio, SAMPLE_RATE, output_format))
        return path
