"""Greedy MusicGen codes in half precision on a GPU against float32 on the CPU, same tiny checkpoint.

What the server runs on a GPU (the decoding loop in bfloat16, or float16 where bfloat16 is not
supported) has not been compared with what it runs on a CPU (float32). Both sides here run the
same tiny random checkpoint (``overture.models.musicgen.tiny``: the real architectures, shrunk),
loaded by ``load_checkpoint`` (plain ``F.linear``, no kernel choice), through ``ContinuousBatch``:
greedy (temperature 0, so no random draw is involved), classifier-free guidance 3, several
prompts in one batch. Printed per layout (mono, stereo) and per side, against CPU float32:

- free-running: the share of codes (prompt, codebook, frame) that agree, how many rows agree
  throughout, and the frame at which each row first differs. Once a row differs it goes on from
  another history, so this share says how soon rounding changes a greedy choice;
- same history: each step's greedy choices while every row is fed CPU float32's tokens (the loop
  unchanged but for the token it keeps), so the share of choices that agree says how often
  rounding alone flips one;
- alone vs batched, on the same side: the first prompt's codes generated alone against its codes
  in the batch. The loop is built so that a row's result does not depend on what shares its
  batch (bitwise on the CPU with the kernels the server's loader picks, which ``load_checkpoint``
  here does not pick); whether CUDA's kernels keep that is what this line shows.

Against CPU float32 on a CUDA device: CUDA bfloat16, float16 and float32 (float32 separates the
device's own rounding from the dtype's). Without one those are skipped, and the line says so;
CPU bfloat16 runs instead, so that the rest of the comparison runs everywhere.

    .venv/bin/python benchmarks/gpu_parity.py [--frames 150] [--prompts 4] [--layouts mono,stereo]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from _machine import machine_line  # noqa: E402
from batching import PROMPTS  # noqa: E402
from musicgen import Context  # noqa: E402
from overture.models.musicgen.batching import ContinuousBatch, Generation  # noqa: E402
from overture.models.musicgen.checkpoint import MusicgenCheckpoint, load_checkpoint  # noqa: E402
from overture.models.musicgen.request import Sampling  # noqa: E402
from overture.models.musicgen.tiny import write_tiny_checkpoint, write_tiny_stereo_checkpoint  # noqa: E402

LAYOUTS = {"mono": write_tiny_checkpoint, "stereo": write_tiny_stereo_checkpoint}
GREEDY = Sampling(top_k=0, top_p=0.0, temperature=0.0, guidance=3.0)
CUDA_SIDES = [("cuda", torch.bfloat16), ("cuda", torch.float16), ("cuda", torch.float32)]


def name(device: str, dtype: torch.dtype) -> str:
    return f"{device} {str(dtype).removeprefix('torch.')}"


class Recording(ContinuousBatch):
    """The loop, recording each row's greedy choice (codebooks,) at every step; given ``forced``
    (each row's choices from another run, in the order the rows joined), it keeps those tokens
    instead of its own, so that every row goes on from that run's history."""

    def __init__(self, checkpoint: MusicgenCheckpoint, forced: list[list[torch.Tensor]] | None = None):
        super().__init__(checkpoint)
        self.forced = forced
        self.joined: list[Generation] = []
        self.chosen: dict[Generation, list[torch.Tensor]] = {}

    def join(self, generation: Generation) -> None:
        super().join(generation)
        self.joined.append(generation)

    def _sample(self, generation: Generation, logits: torch.Tensor) -> torch.Tensor:
        tokens = super()._sample(generation, logits)
        chosen = self.chosen.setdefault(generation, [])
        chosen.append(tokens.cpu())
        if self.forced is None:
            return tokens
        return self.forced[self.joined.index(generation)][len(chosen) - 1].to(tokens.device)


def greedy(
    checkpoint: MusicgenCheckpoint,
    prompts: list[str],
    frames: int,
    scratch: Path,
    forced: list[list[torch.Tensor]] | None = None,
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Each prompt's codes (codebooks, frames) and its greedy choices at each step, all prompts in
    one running batch (``forced``: see ``Recording``)."""
    batch = Recording(checkpoint, forced)
    for prompt in prompts:
        generator = torch.Generator(device=checkpoint.device)
        batch.join(Generation(checkpoint.encode_text(prompt), GREEDY, generator, Context(scratch), frames=frames))
    generations = list(batch.joined)
    codes: dict[Generation, torch.Tensor] = {}
    while batch.rows:
        for generation, result in batch.step():
            if isinstance(result, BaseException):
                raise result
            codes[generation] = result
    return [codes[g] for g in generations], [batch.chosen[g] for g in generations]


def compare_choices(
    reference: list[list[torch.Tensor]], other: list[list[torch.Tensor]], delays: torch.Tensor, frames: int
) -> str:
    """Share of greedy choices that agree, counting only the codes a step places (the delay
    pattern's padding at either end is chosen but not kept)."""
    equal = total = 0
    for ours, theirs in zip(reference, other, strict=True):
        ours_t, theirs_t = torch.stack(ours), torch.stack(theirs)  # (steps, codebooks)
        frame = torch.arange(ours_t.shape[0])[:, None] - delays[None]
        kept = (frame >= 0) & (frame < frames)
        equal += int(((ours_t == theirs_t) & kept).sum())
        total += int(kept.sum())
    return f"same history: {equal} of {total} greedy choices agree ({100 * equal / total:.2f} %)"


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> str:
    """Share of equal codes, rows equal throughout, and each row's first differing frame."""
    equal = sum(int((r == o).sum()) for r, o in zip(reference, other, strict=True))
    total = sum(r.numel() for r in reference)
    firsts = []
    for r, o in zip(reference, other, strict=True):
        differs = (r != o).any(dim=0).nonzero()
        firsts.append(str(int(differs[0])) if len(differs) else "-")
    identical = firsts.count("-")
    return (
        f"free-running: {equal} of {total} codes agree ({100 * equal / total:.1f} %); rows equal throughout "
        f"{identical} of {len(reference)}; first differing frame per row: {', '.join(firsts)} ('-': none)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150, help="frames per prompt (50 a second)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--layouts", default="mono,stereo", help="tiny checkpoints to compare on: mono, stereo")
    args = parser.parse_args()
    print(machine_line())
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    if torch.cuda.is_available():
        sides = CUDA_SIDES
    else:
        print(f"no CUDA device: skipped {', '.join(name(*side) for side in CUDA_SIDES)} against cpu float32")
        sides = [("cpu", torch.bfloat16)]
    scratch = Path(tempfile.mkdtemp(prefix="gpu-parity-"))
    for layout in args.layouts.split(","):
        directory = scratch / layout
        LAYOUTS[layout](directory)
        print(f"tiny {layout} checkpoint, {args.prompts} prompts of {args.frames} frames in one batch, greedy, "
              "guidance 3, ContinuousBatch; compared: codes against cpu float32's")  # fmt: skip
        cpu = load_checkpoint(directory, "cpu", torch.float32)
        reference, reference_choices = greedy(cpu, prompts, args.frames, scratch)
        for device, dtype in sides:
            started = time.perf_counter()
            checkpoint = load_checkpoint(directory, device, dtype)
            codes, _ = greedy(checkpoint, prompts, args.frames, scratch)
            alone, _ = greedy(checkpoint, prompts[:1], args.frames, scratch)
            forced_codes, choices = greedy(checkpoint, prompts, args.frames, scratch, forced=reference_choices)
            assert all(torch.equal(a, b) for a, b in zip(forced_codes, reference, strict=True)), "forcing failed"
            elapsed = time.perf_counter() - started
            print(f"  {name(device, dtype)} vs cpu float32 [{elapsed:.1f} s]:")
            print(f"    {compare(reference, codes)}")
            print(f"    {compare_choices(reference_choices, choices, cpu.delays, args.frames)}")
            together = compare(codes[:1], alone).removeprefix("free-running: ")
            print(f"    first prompt alone vs in the batch of {args.prompts}, {name(device, dtype)} both: {together}")
            del checkpoint


if __name__ == "__main__":
    main()
