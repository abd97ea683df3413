"""Sampling MusicGen's audio codes: our own loop around transformers' decoder.

Why not ``model.generate``: in a batch each prediction must keep its own random stream, so that
its audio does not depend on its neighbours; progress and cancel are checked between steps, and a
canceled prediction leaves the batch while the others go on; Replicate's predictor samples by
audiocraft's rules (top-p wins over top-k, temperature 0 is greedy, guidance applies to any
coefficient); and clips beyond 30 s are generated in windows that take the previous audio as
their prompt. The decoder call, its KV cache and the delay pattern are transformers' own, and on
the same input the greedy codes equal ``generate``'s token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from overture.models.base import Canceled
from overture.models.musicgen.checkpoint import (
    BOS_TOKEN,
    MAX_WINDOW_SECONDS,
    WINDOW_STRIDE_SECONDS,
    Conditioning,
    MusicgenCheckpoint,
)
from overture.models.musicgen.request import Sampling


def sample_tokens(logits: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Logits (rows, codebooks, vocabulary) → tokens (rows, codebooks), each row drawing from its
    own generator. Like audiocraft: temperature ≤ 0 is greedy, top-p > 0 overrides top-k."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p > 0:
        probs = _keep_nucleus(probs, sampling.top_p)
    elif sampling.top_k > 0:
        probs = _keep_top_k(probs, sampling.top_k)
    return torch.stack([torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, generators, strict=True)])


def _keep_top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    kth = probs.topk(min(k, probs.shape[-1]), dim=-1).values[..., -1:]
    return probs * (probs >= kth)


def _keep_nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Zero the tokens outside the smallest set whose probability reaches ``p``."""
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > p
    return probs.masked_fill(torch.empty_like(outside).scatter_(-1, order, outside), 0.0)


class Watcher(Protocol):
    """The part of a prediction's ``Context`` the loop talks to."""

    def progress(self, done: int, total: int) -> None: ...

    def check_canceled(self) -> None: ...


@dataclass
class Row:
    """One prediction's share of a batch."""

    #: ``MusicgenCheckpoint.encode_text`` output.
    text: tuple[torch.Tensor, torch.Tensor]
    generator: torch.Generator
    watcher: Watcher
    #: Codes (codebooks, frames) that the output continues.
    prompt: torch.Tensor | None = None
    #: Mono audio at the model's rate whose melody conditions the output (melody models).
    melody: torch.Tensor | None = None


@dataclass(frozen=True)
class Window:
    """``frames`` frames of the clip from ``offset``, the first ``prompt`` of them already known."""

    offset: int
    prompt: int
    frames: int

    def steps(self, max_delay: int) -> int:
        return self.frames - self.prompt + max_delay


def plan_windows(total: int, prompt: int, window: int, stride: int) -> list[Window]:
    """audiocraft's plan: one window when it fits, else windows of at most ``window`` frames,
    each starting ``stride`` frames after the previous one and prompted with its overlap."""
    if total <= window:
        return [Window(0, prompt, total)]
    windows = []
    offset = 0
    while offset + prompt < total:
        frames = min(total - offset, window)
        windows.append(Window(offset, prompt, frames))
        prompt, offset = frames - stride, offset + stride
    return windows


def generate(checkpoint: MusicgenCheckpoint, rows: Sequence[Row], frames: int, sampling: Sampling) -> list[Any]:
    """Codes (codebooks, frames) for each row, or ``Canceled`` for rows canceled on the way.

    Rows run in lockstep, so they must share the prompt length (and, for melody models, the text
    length); the caller groups them.
    """
    prompt_frames = {0 if row.prompt is None else row.prompt.shape[-1] for row in rows}
    if len(prompt_frames) != 1:
        raise ValueError("rows of one batch must have prompts of the same length")
    windows = plan_windows(
        frames,
        prompt_frames.pop(),
        checkpoint.frames(MAX_WINDOW_SECONDS),
        checkpoint.frames(WINDOW_STRIDE_SECONDS),
    )
    progress = _Progress(sum(w.steps(checkpoint.max_delay) for w in windows))
    empty = torch.empty(checkpoint.num_codebooks, 0, dtype=torch.long)
    codes = torch.stack([(empty if row.prompt is None else row.prompt).to(checkpoint.device) for row in rows])
    active = list(range(len(rows)))
    # Rows that leave the batch on the way keep this result.
    results: list[Any] = [Canceled() for _ in rows]
    for window in windows:
        chromas = [_window_chroma(checkpoint, rows[i].melody, window, len(windows) > 1) for i in active]
        conditioning = checkpoint.conditioning([rows[i].text for i in active], chromas, sampling.guided)
        prompt = codes[:, :, window.offset : window.offset + window.prompt]
        decoder = WindowDecoder(
            checkpoint, prompt, window.frames, conditioning, sampling, [rows[i].generator for i in active]
        )
        while decoder.remaining:
            decoder.step()
            report = progress.advance()
            wanted = [j for j, i in enumerate(active) if _still_wanted(rows[i].watcher, progress, report)]
            if len(wanted) < len(active):
                if not wanted:
                    return results
                decoder.keep(wanted)
                codes = codes[wanted]
                active = [active[j] for j in wanted]
        codes = torch.cat([codes, decoder.codes()[:, :, window.prompt :]], dim=-1)
    for j, i in enumerate(active):
        results[i] = codes[j]
    return results


class WindowDecoder:
    """One window of a batch: the delay-pattern grid of tokens, the KV cache, and one step.

    The grid holds position t of codebook k = frame t - 1 - delay(k) (position 0 is the start
    token; outside the frames it is padding). Each step feeds the newest position (the whole
    known prefix on the first) and fills the next one where that is a frame to generate.
    """

    def __init__(
        self,
        checkpoint: MusicgenCheckpoint,
        prompt: torch.Tensor,
        frames: int,
        conditioning: Conditioning,
        sampling: Sampling,
        generators: list[torch.Generator],
    ):
        rows, codebooks, prompt_frames = prompt.shape
        self.checkpoint = checkpoint
        self.conditioning = conditioning
        self.sampling = sampling
        self.generators = generators
        self.delays = checkpoint.delays.tolist()
        self.prompt_frames = prompt_frames
        self.frames = frames
        self.length = frames + checkpoint.max_delay + 1
        self.grid = torch.full((rows, codebooks, self.length), BOS_TOKEN, dtype=torch.long, device=checkpoint.device)
        for k, delay in enumerate(self.delays):
            self.grid[:, k, 1 + delay : 1 + delay + prompt_frames] = prompt[:, k]
        self.position = prompt_frames + 1
        self.cache: Any = None

    @property
    def remaining(self) -> int:
        return self.length - self.position

    def step(self) -> None:
        start = 0 if self.cache is None else self.position - 1
        logits, self.cache = self.checkpoint.next_logits(
            self.grid[:, :, start : self.position], self.conditioning, self.cache, self.sampling.guided
        )
        if self.sampling.guided:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + (conditional - unconditional) * self.sampling.guidance
        tokens = sample_tokens(logits, self.sampling, self.generators)
        fresh = [
            k for k, delay in enumerate(self.delays) if self.prompt_frames <= self.position - 1 - delay < self.frames
        ]
        self.grid[:, fresh, self.position] = tokens[:, fresh]
        self.position += 1

    def keep(self, rows: list[int]) -> None:
        """Go on with these rows only (the others were canceled)."""
        index = torch.tensor(rows, device=self.grid.device)
        # Guidance doubles the rows: the unconditional ones follow the conditional ones.
        conditioning_rows = torch.cat([index, index + self.grid.shape[0]]) if self.sampling.guided else index
        self.grid = self.grid[index]
        self.generators = [self.generators[i] for i in rows]
        self.conditioning = self.conditioning.select(conditioning_rows)
        if self.cache is not None:
            self.cache.batch_select_indices(conditioning_rows)

    def codes(self) -> torch.Tensor:
        """The window's frames (rows, codebooks, frames), delays undone."""
        return torch.stack(
            [self.grid[:, k, 1 + delay : 1 + delay + self.frames] for k, delay in enumerate(self.delays)], dim=1
        )


class _Progress:
    """Counts decoding steps; reports about every 1%."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.every = max(1, total // 100)

    def advance(self) -> bool:
        self.done += 1
        return self.done % self.every == 0 or self.done == self.total


def _still_wanted(watcher: Watcher, progress: _Progress, report: bool) -> bool:
    try:
        watcher.check_canceled()
    except Canceled:
        return False
    if report:
        watcher.progress(progress.done, progress.total)
    return True


def _window_chroma(
    checkpoint: MusicgenCheckpoint, melody: torch.Tensor | None, window: Window, windowed: bool
) -> torch.Tensor | None:
    """The melody's chroma for one window. Across windows the melody loops, each window seeing
    30 s of it from its own start time, as audiocraft does."""
    if melody is None or checkpoint.chroma is None:
        return None
    if windowed:
        start = window.offset * checkpoint.hop_length
        positions = start + torch.arange(MAX_WINDOW_SECONDS * checkpoint.sample_rate)
        melody = melody[positions % melody.shape[-1]]
    return checkpoint.chroma(melody)
