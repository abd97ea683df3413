"""Continuous batching of MusicGen generations: sequences join the running batch at any step and
leave when done, each with its own position, delay pattern, length, sampling settings and random
stream, so that its codes do not depend on what else shares the batch.

Classifier-free guidance pairs each guided sequence's conditional row with an unconditional one
(zero text; the null melody) in the same decoder call. Clips beyond 30 s are generated in windows,
audiocraft's way: each further window starts 18 s after the previous one, with the overlap as its
prompt; a sequence moving to its next window prefills that prompt in place and stays in the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from overture.models.base import Canceled
from overture.models.musicgen.checkpoint import BOS_TOKEN, MusicgenCheckpoint
from overture.models.musicgen.decoder import StepDecoder
from overture.models.musicgen.request import MAX_WINDOW_SECONDS, WINDOW_STRIDE_SECONDS, Sampling
from overture.models.musicgen.settings import MAX_SLOTS
from overture.models.schema import shown

#: A streaming sequence reports its finished frames at most this often (50 frames = 1 s).
STREAM_EVERY_FRAMES = 10


class Unsampleable(ValueError):
    """A row's sampling inputs cannot be sampled with: the model is fine, the request is not."""


def sample_tokens(logits: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Logits (rows, codebooks, vocabulary) → tokens (rows, codebooks), each row drawing from its
    own generator. Like audiocraft: temperature ≤ 0 is greedy, top-p > 0 overrides top-k."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    # Checked here, not left to multinomial: its error would look like any other RuntimeError,
    # and on CUDA it is a device-side assert that poisons the whole context.
    if not bool(torch.isfinite(probs).all()):
        raise Unsampleable("the next token's probabilities are not finite numbers")
    if sampling.top_p > 0:
        probs = _keep_nucleus(probs, sampling.top_p)
    elif sampling.top_k > 0:
        probs = _keep_top_k(probs, sampling.top_k)
    return torch.stack([torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, generators, strict=True)])


def _unsampleable(sampling: Sampling, exc: Exception) -> ValueError:
    """The error of a row whose sampling inputs the schema allows but no float arithmetic can use:
    a temperature so small that the logits overflow to NaN, a guidance beyond any float."""
    inputs = f"temperature={shown(sampling.temperature)} and classifier_free_guidance={shown(sampling.guidance)}"
    return ValueError(f"Could not sample with {inputs}: {type(exc).__name__}: {exc}")


def _keep_top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    kth = probs.topk(min(k, probs.shape[-1]), dim=-1).values[..., -1:]
    return probs * (probs >= kth)


def _keep_nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Zero the tokens outside the smallest set whose probability reaches ``p``."""
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > p
    return probs.masked_fill(torch.empty_like(outside).scatter_(-1, order, outside), 0.0)


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


class Watcher(Protocol):
    """The part of a prediction's ``Context`` the loop talks to."""

    def progress(self, done: int, total: int) -> None: ...

    def check_canceled(self) -> None: ...


@dataclass(eq=False)
class Generation:
    """One prediction's share of the batch."""

    #: ``MusicgenCheckpoint.encode_text`` output.
    text: tuple[torch.Tensor, torch.Tensor]
    sampling: Sampling
    generator: torch.Generator
    watcher: Watcher
    #: Length of the clip, prompt included, in frames.
    frames: int
    #: Codes (codebooks, frames) that the output continues.
    prompt: torch.Tensor | None = None
    #: Mono audio at the model's rate whose melody conditions the output (melody models).
    melody: torch.Tensor | None = None
    #: Called with every finished frame so far (codebooks, frames) as they grow, for streaming.
    on_frames: Callable[[torch.Tensor], None] | None = None

    # -- where it is (set by the batch) --
    windows: list[Window] = field(default_factory=list)
    window: int = 0
    #: Frames known before the current window's new ones: the prompt and earlier windows.
    codes: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    #: The current window in the delay pattern: position t of codebook k holds frame
    #: t - 1 - delay(k); position 0 is the start token, and outside the frames it is padding.
    grid: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    position: int = 0
    slot: int = -1
    #: The unconditional row's slot under classifier-free guidance.
    null_slot: int | None = None
    #: Cache positions the current window needs: prefixes, frames, delays, start token.
    positions: int = 0
    done_steps: int = 0
    total_steps: int = 0
    streamed: int = 0

    @property
    def current(self) -> Window:
        return self.windows[self.window]

    def next_input(self) -> torch.Tensor:
        return self.grid[:, self.position - 1]

    def finished_frames(self, max_delay: int) -> int:
        window = self.current
        return window.offset + min(window.frames, max(window.prompt, self.position - 1 - max_delay))

    def frames_so_far(self, delays: list[int]) -> torch.Tensor:
        """Every finished frame (codebooks, frames), on the CPU."""
        window = self.current
        local = self.finished_frames(max(delays)) - window.offset
        # The grid is on the model's device, the codes of earlier windows on the CPU.
        fresh = _undelay(self.grid, delays, local).cpu()
        return torch.cat([self.codes[:, : window.offset], fresh], dim=-1)


def _undelay(grid: torch.Tensor, delays: list[int], frames: int) -> torch.Tensor:
    return torch.stack([grid[k, 1 + delay : 1 + delay + frames] for k, delay in enumerate(delays)])


class ContinuousBatch:
    """The running batch for one loaded checkpoint."""

    def __init__(self, checkpoint: MusicgenCheckpoint, memory_budget: int | None = None, max_slots: int = MAX_SLOTS):
        self.checkpoint = checkpoint
        self.decoder = StepDecoder(checkpoint.model)
        self.cache = self.decoder.new_cache(max_slots)
        self.delays: list[int] = checkpoint.delays.tolist()
        self.max_delay = checkpoint.max_delay
        self.window_frames = checkpoint.frames(MAX_WINDOW_SECONDS)
        self.stride_frames = checkpoint.frames(WINDOW_STRIDE_SECONDS)
        self.memory_budget = default_memory_budget(checkpoint.device) if memory_budget is None else memory_budget
        self.max_slots = max_slots
        self.rows: list[Generation] = []
        #: The generation each slot of the cache belongs to.
        self._owners: list[Generation] = []

    # -- admission -----------------------------------------------------------------------------

    def positions_needed(self, frames: int, prefix: int = 0) -> int:
        """Cache positions of a generation: its longest window, the delays, the start token."""
        return prefix + min(frames, self.window_frames) + self.max_delay + 1

    def has_room(self, slots: int, positions: int) -> bool:
        """Whether ``slots`` more rows of ``positions`` fit the slot limit, and the key/value
        buffers they grow to (the old ones included while they are copied) fit the memory budget;
        an empty batch takes anything, so that no request can wait forever."""
        if not self.rows:
            return True
        total = len(self._owners) + slots
        longest = max(self._longest(), positions)
        return total <= self.max_slots and self.cache.peak_bytes(total, longest) <= self.memory_budget

    def _longest(self) -> int:
        return max((generation.positions for generation in self.rows), default=0)

    @torch.inference_mode()
    def join(self, generation: Generation) -> None:
        """Add a generation; it takes part from the next ``step``."""
        prompt = generation.prompt
        codebooks = self.checkpoint.num_codebooks
        generation.codes = torch.empty(codebooks, 0, dtype=torch.long) if prompt is None else prompt.cpu()
        generation.windows = plan_windows(
            generation.frames, generation.codes.shape[-1], self.window_frames, self.stride_frames
        )
        generation.total_steps = sum(w.steps(self.max_delay) for w in generation.windows)
        generation.slot = self._add_slot(generation)
        guided = generation.sampling.guided
        generation.null_slot = self._add_slot(generation) if guided else None
        states, mask = generation.text
        self.decoder.set_text(self.cache, generation.slot, states, mask)
        if generation.null_slot is not None:
            self.decoder.set_text(self.cache, generation.null_slot, None, None)
        self.rows.append(generation)
        try:
            self._start_window(generation)
        except BaseException:
            self._remove(generation)
            raise

    def _add_slot(self, generation: Generation) -> int:
        self._owners.append(generation)
        return self.cache.add_slot()

    def _start_window(self, generation: Generation) -> None:
        """Lay out the current window's grid and prefill what is known of it."""
        window = generation.current
        prompt = generation.codes[:, window.offset : window.offset + window.prompt]
        length = window.frames + self.max_delay + 1
        grid = torch.full((prompt.shape[0], length), BOS_TOKEN, dtype=torch.long)
        for k, delay in enumerate(self.delays):
            grid[k, 1 + delay : 1 + delay + window.prompt] = prompt[k]
        generation.grid = grid.to(self.checkpoint.device)
        generation.position = window.prompt + 1
        slots = [generation.slot] if generation.null_slot is None else [generation.slot, generation.null_slot]
        embeds = self.decoder.embed(generation.grid[None, :, : generation.position - 1]).expand(len(slots), -1, -1)
        prefixes = self._melody_prefixes(generation)
        if prefixes is not None:
            embeds = torch.cat([prefixes.to(embeds.dtype), embeds], dim=1)
        # The whole window's room at once: growing step by step would copy the buffers again and again.
        generation.positions = embeds.shape[1] + length - generation.position + 1
        self.cache.reserve(len(self._owners), self._longest())
        self.decoder.prefill(self.cache, slots, embeds)

    def _melody_prefixes(self, generation: Generation) -> torch.Tensor | None:
        """Melody models: chroma then text in front of the audio tokens, per slot (the null ones
        for the unconditional row). Across windows the melody loops, each window seeing 30 s of it
        from its own start time, as audiocraft does."""
        checkpoint = self.checkpoint
        if not checkpoint.melody:
            return None
        melody = generation.melody
        chroma = None
        if melody is not None and checkpoint.chroma is not None:
            if len(generation.windows) > 1:
                start = generation.current.offset * checkpoint.hop_length
                span = start + torch.arange(MAX_WINDOW_SECONDS * checkpoint.sample_rate)
                melody = melody[span % melody.shape[-1]]
            chroma = checkpoint.chroma(melody)
        return checkpoint.melody_prefixes(generation.text[0], chroma, generation.sampling.guided)

    # -- running -------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[tuple[Generation, Any]]:
        """Advance every row one position; the generations that ended, each with its codes
        (codebooks, frames) or ``Canceled``."""
        tokens = torch.stack([owner.next_input() for owner in self._owners])
        logits = self.decoder.step(self.cache, tokens)
        ended: list[tuple[Generation, Any]] = []
        for generation in list(self.rows):
            try:
                sampled = self._sample(generation, logits)
            except (Unsampleable, OverflowError) as exc:  # its own inputs broke it: it ends alone
                ended.append((generation, _unsampleable(generation.sampling, exc)))
                continue
            result = self._advance(generation, sampled)
            if result is not None:
                ended.append((generation, result))
        # Only now: removing moves slots, and the logits above are indexed by the old ones.
        for generation, _ in ended:
            self._remove(generation)
        return ended

    def _sample(self, generation: Generation, logits: torch.Tensor) -> torch.Tensor:
        """A row's next tokens, guided by its unconditional row when it has one."""
        row = logits[generation.slot]
        if generation.null_slot is not None:
            unconditional = logits[generation.null_slot]
            row = unconditional + (row - unconditional) * generation.sampling.guidance
        return sample_tokens(row[None], generation.sampling, [generation.generator])[0]

    def _advance(self, generation: Generation, tokens: torch.Tensor) -> Any:
        """Place a row's new tokens; its result when it has ended, else None."""
        window = generation.current
        local = [generation.position - 1 - delay for delay in self.delays]
        fresh = [k for k, frame in enumerate(local) if window.prompt <= frame < window.frames]
        generation.grid[fresh, generation.position] = tokens[fresh]
        generation.position += 1
        generation.done_steps += 1
        try:
            generation.watcher.check_canceled()
        except Canceled as canceled:
            return canceled
        every = max(1, generation.total_steps // 100)
        if generation.done_steps % every == 0 or generation.done_steps == generation.total_steps:
            generation.watcher.progress(generation.done_steps, generation.total_steps)
        if generation.position < generation.grid.shape[1]:
            try:
                self._stream(generation)
            except Exception as exc:  # its streamed audio could not be published: it fails alone
                return exc
            return None
        window_codes = _undelay(generation.grid, self.delays, window.frames).cpu()
        generation.codes = torch.cat([generation.codes[:, : window.offset], window_codes], dim=-1)
        if generation.window + 1 < len(generation.windows):
            generation.window += 1
            self._start_window(generation)
            return None
        return generation.codes

    def _stream(self, generation: Generation) -> None:
        if generation.on_frames is None:
            return
        finished = generation.finished_frames(self.max_delay)
        if finished - generation.streamed >= STREAM_EVERY_FRAMES:
            generation.streamed = finished
            generation.on_frames(generation.frames_so_far(self.delays).cpu())

    def _remove(self, generation: Generation) -> None:
        """Free a generation's slots, moving the last slots into the holes."""
        self.rows.remove(generation)
        for slot in sorted({generation.slot, generation.null_slot} - {None}, reverse=True):
            last = len(self._owners) - 1
            self.cache.move(last, slot)
            owner = self._owners.pop()
            if slot != last:
                self._owners[slot] = owner
                if owner.slot == last:
                    owner.slot = slot
                else:
                    owner.null_slot = slot
        if self.rows:
            self.cache.fit(self._longest())
        else:
            self.cache.clear()

    @torch.inference_mode()
    def abort(self, error: BaseException) -> list[tuple[Generation, Any]]:
        """End every generation with ``error`` (the shared step failed, e.g. out of memory)."""
        ended = [(generation, error) for generation in self.rows]
        for generation, _ in ended:
            self._remove(generation)
        return ended


def default_memory_budget(device: torch.device) -> int:
    """Key/value memory the batch may take: half the GPU's free memory, a quarter of the RAM.

    On CUDA, memory that this process's caching allocator holds without using it (an earlier
    batch's buffers, say) is free to the batch too, though the driver counts it as taken."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return (free + cached) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
