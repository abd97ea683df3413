"""Running a group of requests that share checkpoint, duration and sampling settings.

Loads the checkpoint through ``Checkpoints`` (lazily, kept in its LRU), turns each request into a
decoding ``Row``, decodes rows of equal shape in lockstep, and writes each output file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from overture.models.audio import encode, normalize
from overture.models.base import Canceled, Context
from overture.models.checkpoints import Checkpoints, module_nbytes
from overture.models.musicgen.checkpoint import (
    MAX_WINDOW_SECONDS,
    WINDOW_STRIDE_SECONDS,
    MusicgenCheckpoint,
    load_checkpoint,
)
from overture.models.musicgen.generation import Row, generate
from overture.models.musicgen.input_audio import continuation_prompt, input_slice, splice, to_model_audio
from overture.models.musicgen.request import Request

#: A continuation fades from the input audio into the generated audio over this long.
SPLICE_SECONDS = 0.01


@dataclass
class _Prepared:
    ctx: Context
    request: Request
    row: Row
    #: The input audio the output starts with (continuation), at the model's rate and channels.
    prompt_audio: torch.Tensor | None


def run_group(checkpoints: Checkpoints, jobs: list[tuple[Context, Request]]) -> list[Any]:
    """An output file or an exception for each job; the jobs share ``Request.batch_key``."""
    try:
        checkpoint = load(checkpoints, jobs[0][1].hub_id, [ctx for ctx, _ in jobs])
    except Exception as exc:  # missing or excluded checkpoint, or it failed to load: all fail alike
        return [exc] * len(jobs)
    results: list[Any] = [None] * len(jobs)
    lockstep: dict[tuple[int, int], list[tuple[int, _Prepared]]] = {}
    for index, (ctx, request) in enumerate(jobs):
        try:
            prepared = _prepare(checkpoint, ctx, request)
        except Exception as exc:  # a bad input fails its own prediction, not the batch
            results[index] = exc
            continue
        lockstep.setdefault(_shape(checkpoint, prepared.row), []).append((index, prepared))
    for group in lockstep.values():
        outputs = _decode(checkpoint, [prepared for _, prepared in group])
        for (index, _), output in zip(group, outputs, strict=True):
            results[index] = output
    return results


def load(checkpoints: Checkpoints, requested: str, contexts: list[Context]) -> MusicgenCheckpoint:
    """The checkpoint serving hub id ``requested`` (after the operator's substitutions), loaded on
    first use; every prediction's log says which one ran."""
    served = checkpoints.served(requested)

    def loader() -> MusicgenCheckpoint:
        directory = checkpoints.path(served)
        _log(contexts, f"Loading checkpoint {served} from {directory}")
        started = time.monotonic()
        checkpoint = load_checkpoint(directory, checkpoints.device(), checkpoints.dtype())
        _log(contexts, f"Loaded in {time.monotonic() - started:.1f} s")
        return checkpoint

    checkpoint = checkpoints.load(served, loader, lambda c: module_nbytes(c.model))
    serving = "" if served == requested else f", serving {requested}"
    dtype = str(checkpoint.dtype).removeprefix("torch.")
    _log(contexts, f"Checkpoint: {served}{serving} ({checkpoint.device}, {dtype})")
    return checkpoint


def _prepare(checkpoint: MusicgenCheckpoint, ctx: Context, request: Request) -> _Prepared:
    """Seed, text and input audio, turned into what the decoding loop needs."""
    seed = request.resolve_seed()
    ctx.log(f"Using seed: {seed}")
    row = Row(
        text=checkpoint.encode_text(request.prompt),
        generator=torch.Generator(device=checkpoint.device).manual_seed(seed),
        watcher=ctx,
    )
    prompt_audio = None
    if request.input_audio is not None:
        audio, rate = input_slice(request)
        if request.continuation:
            room = min(checkpoint.frames(request.duration), checkpoint.frames(MAX_WINDOW_SECONDS))
            prompt_audio = continuation_prompt(
                to_model_audio(audio, rate, checkpoint.sample_rate, checkpoint.channels),
                checkpoint.sample_rate,
                checkpoint.hop_length,
                room,
                request.duration,
            )
            row.prompt = checkpoint.encode_audio(prompt_audio)
        elif checkpoint.melody:
            row.melody = to_model_audio(audio, rate, checkpoint.sample_rate, 1)[0]
        else:  # the operator substituted a checkpoint without melody conditioning
            raise ValueError(f"{request.model_version} is served by a checkpoint without melody conditioning here.")
    return _Prepared(ctx, request, row, prompt_audio)


def _shape(checkpoint: MusicgenCheckpoint, row: Row) -> tuple[int, int]:
    """Rows of equal shape decode in lockstep: same prompt length and, for melody models, same
    text length (their text is a prefix, so its length moves every position after it)."""
    prompt = 0 if row.prompt is None else row.prompt.shape[-1]
    return prompt, row.text[0].shape[0] if checkpoint.melody else 0


def _decode(checkpoint: MusicgenCheckpoint, group: list[_Prepared]) -> list[Any]:
    request = group[0].request
    windows = ""
    if request.duration > MAX_WINDOW_SECONDS:
        windows = f" in windows of {MAX_WINDOW_SECONDS} s, each {WINDOW_STRIDE_SECONDS} s after the last"
    company = f", batched with {len(group) - 1} other prediction(s)" if len(group) > 1 else ""
    _log([p.ctx for p in group], f"Generating {request.duration} s{windows}{company}")
    try:
        codes = generate(checkpoint, [p.row for p in group], checkpoint.frames(request.duration), request.sampling)
    except Exception as exc:  # the shared loop failed (e.g. out of memory): every row of it fails
        return [exc] * len(group)
    return [
        c if isinstance(c, Canceled) else _write_output(checkpoint, p, c) for p, c in zip(group, codes, strict=True)
    ]


def _write_output(checkpoint: MusicgenCheckpoint, prepared: _Prepared, codes: torch.Tensor) -> Path | Exception:
    request = prepared.request
    try:
        audio = checkpoint.decode_audio(codes)
        if prepared.prompt_audio is not None:
            audio = splice(prepared.prompt_audio, audio, round(SPLICE_SECONDS * checkpoint.sample_rate))
        samples = normalize(audio.T.numpy(), checkpoint.sample_rate, request.normalization_strategy)
        path = prepared.ctx.scratch_path(f"out.{request.output_format}")
        path.write_bytes(encode(samples, checkpoint.sample_rate, request.output_format))
    except Exception as exc:  # this prediction's output failed, not its neighbours'
        return exc
    return path


def _log(contexts: list[Context], message: str) -> None:
    for ctx in contexts:
        ctx.log(message)
