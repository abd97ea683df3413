"""What surrounds a MusicGen generation: the checkpoint it runs on, its conditioning prepared from
the request, and its output file written from the codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from overture.models.audio import encode, normalize
from overture.models.base import Context
from overture.models.musicgen.batching import Generation
from overture.models.musicgen.checkpoint import MusicgenCheckpoint, load_checkpoint
from overture.models.musicgen.decoder import MIN_GEMM_ROWS
from overture.models.musicgen.input_audio import continuation_prompt, input_slice, splice, to_model_audio
from overture.models.musicgen.request import MAX_WINDOW_SECONDS, Request
from overture.models.musicgen.settings import MAX_SLOTS
from overture.models.musicgen.streaming import stream_decoder
from overture.models.musicgen.weights import musicgen_weights
from overture.runtime.checkpoints import Checkpoints, module_nbytes
from overture.runtime.kernel_cache import KernelCache
from overture.runtime.linear import KernelReport, select_linear_kernels

#: A continuation fades from the input audio into the generated audio over this long.
SPLICE_SECONDS = 0.01


@dataclass(eq=False)
class Prepared:
    ctx: Context
    request: Request
    checkpoint: MusicgenCheckpoint
    generation: Generation
    #: The input audio the output starts with (continuation), at the model's rate and channels.
    prompt_audio: torch.Tensor | None
    #: Decodes the growing codes chunk by chunk, when the prediction streams.
    stream: Any = None
    parts: int = 0

    def publish(self, codes: torch.Tensor) -> None:
        """Publish the audio of the frames finished so far (codebooks, frames) that has not been
        published yet, as partial output files: each about a second, in order, together exactly
        the codes' one-shot decode (before the whole clip's normalization, which needs all of it)."""
        for chunk in self.stream.feed(codes):
            self._publish_part(chunk)

    def _publish_part(self, audio: torch.Tensor) -> None:
        self.parts += 1
        rate, fmt = self.checkpoint.sample_rate, self.request.output_format
        path = self.ctx.scratch_path(f"part-{self.parts:03d}.{fmt}")
        path.write_bytes(encode(audio.T.numpy().clip(-1, 1), rate, fmt))
        self.ctx.partial(path)

    def write_output(self, codes: torch.Tensor) -> Path:
        """The output file for the generated codes (codebooks, frames)."""
        checkpoint, request = self.checkpoint, self.request
        if self.stream is not None:
            self.publish(codes)
            for chunk in self.stream.finish():
                self._publish_part(chunk)
        audio = checkpoint.decode_audio(codes)
        if self.prompt_audio is not None:
            audio = splice(self.prompt_audio, audio, round(SPLICE_SECONDS * checkpoint.sample_rate))
        samples = normalize(audio.T.numpy(), checkpoint.sample_rate, request.normalization_strategy)
        path = self.ctx.scratch_path(f"out.{request.output_format}")
        path.write_bytes(encode(samples, checkpoint.sample_rate, request.output_format))
        return path


def load(checkpoints: Checkpoints, requested: str, ctx: Context, slots: int = MAX_SLOTS) -> MusicgenCheckpoint:
    """The checkpoint serving hub id ``requested`` (after the operator's substitutions), loaded on
    first use with kernels chosen for batches of up to ``slots`` rows; every prediction's log says
    which one ran."""
    served = checkpoints.served(requested)

    def loader() -> MusicgenCheckpoint:
        directory = checkpoints.path(served, musicgen_weights(served))
        ctx.log(f"Loading checkpoint {served} from {directory}")
        started = time.monotonic()
        checkpoint = load_checkpoint(directory, checkpoints.device(), checkpoints.dtype())
        ctx.log(f"Loaded in {time.monotonic() - started:.1f} s")
        ctx.log(select_kernels(checkpoint, slots).summary())
        return checkpoint

    checkpoint = checkpoints.load(served, loader, lambda c: module_nbytes(c.model))
    serving = "" if served == requested else f", serving {requested}"
    dtype = str(checkpoint.dtype).removeprefix("torch.")
    ctx.log(f"Checkpoint: {served}{serving} ({checkpoint.device}, {dtype})")
    return checkpoint


def select_kernels(checkpoint: MusicgenCheckpoint, slots: int = MAX_SLOTS) -> KernelReport:
    """Give the decoder's linear layers the fastest batch-invariant kernels for the loop's row
    counts (``MIN_GEMM_ROWS`` up to ``slots``); cross-attention keys see the text only once. The
    choice comes from the kernel cache (``OVERTURE_KERNEL_CACHE``) when it holds one for this
    machine and shape, and is measured and stored there otherwise."""
    most = max(slots, MIN_GEMM_ROWS)
    rows = sorted({MIN_GEMM_ROWS, most} | {r for r in (8, 16, 32) if r < most})
    return select_linear_kernels(
        checkpoint.model.decoder,
        rows,
        skip=("*.encoder_attn.k_proj", "*.encoder_attn.v_proj"),
        cache=KernelCache.from_env(),
    )


def prepare_kernels(checkpoints: Checkpoints, requested: str, slots: int = MAX_SLOTS) -> KernelReport:
    """Measure and store the kernel choice for hub id ``requested`` without serving it (``overture
    pull``), so that the server's first load of it reads the choice instead of measuring. Run it
    under the thread count and ``slots`` (``--batch-slots``) the server will use: both are part of
    the cache's key. The checkpoint is loaded for its shapes and dropped; a choice already in the
    cache is not measured again."""
    served = checkpoints.served(requested)
    checkpoint = load_checkpoint(
        checkpoints.path(served, musicgen_weights(served)), checkpoints.device(), checkpoints.dtype()
    )
    return select_kernels(checkpoint, slots)


def prepare(checkpoint: MusicgenCheckpoint, ctx: Context, request: Request) -> Prepared:
    """Seed, text and input audio, turned into what the decoding loop needs."""
    seed = request.resolve_seed()
    ctx.log(f"Using seed: {seed}")
    generation = Generation(
        text=checkpoint.encode_text(request.prompt),
        sampling=request.sampling,
        generator=torch.Generator(device=checkpoint.device).manual_seed(seed),
        watcher=ctx,
        frames=checkpoint.frames(request.duration),
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
            generation.prompt = checkpoint.encode_audio(prompt_audio)
        elif checkpoint.melody:
            generation.melody = to_model_audio(audio, rate, checkpoint.sample_rate, 1)[0]
        else:  # the operator substituted a checkpoint without melody conditioning
            raise ValueError(f"{request.model_version} is served by a checkpoint without melody conditioning here.")
    prepared = Prepared(ctx, request, checkpoint, generation, prompt_audio)
    if ctx.streaming:
        prepared.stream = stream_decoder(checkpoint)
    return prepared
