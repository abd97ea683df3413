"""What the diffusers-based models (Stable Audio Open, Riffusion) share: loading a pipeline through
the server's checkpoint cache, seeds, and per-step progress with cancellation.

Like the model modules, it imports torch only when used: declaring a model must stay cheap, so
that a server starts in a moment whatever it serves.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from overture.models.base import Context
from overture.models.schema import shown
from overture.runtime.checkpoints import Checkpoints, module_nbytes
from overture.runtime.weights import HubWeights

P = TypeVar("P")


#: Weights a diffusers pipeline never reads in torch: single-file checkpoints for other runtimes
#: (``riffusion-model-v1.ckpt``, Stable Audio's ``model.ckpt``) and Flax, TensorFlow or ONNX
#: exports. A hub repo may carry gigabytes of each beside the pipeline's own folders.
UNUSED_WEIGHTS = ("*.ckpt", "*.msgpack", "*.h5", "*.onnx")


def pipeline_weights(
    repo: str, components: Sequence[str], gated: bool = False, parameters: int | None = None
) -> HubWeights:
    """What a diffusers pipeline loads from ``repo``: ``model_index.json`` and the folders of the
    ``components`` that ``from_pretrained`` loads (every one in ``model_index.json`` that the
    pipeline's loading does not replace), without other runtimes' copies of the weights."""
    files = ("model_index.json", *(f"{component}/*" for component in components))
    return HubWeights(repo, files, ignore=UNUSED_WEIGHTS, gated=gated, parameters=parameters)


def load_pipeline(checkpoints: Checkpoints, weights: HubWeights, pipeline_class: type[P], **kwargs: Any) -> P:
    """The pipeline of ``weights`` (from the operator's substitute repo, if any), loaded once on the
    server's device and dtype, and kept in the LRU of loaded models shared with every other model."""
    served = checkpoints.served(weights.repo)

    def load() -> P:
        path = checkpoints.path(served, weights)
        pipeline = pipeline_class.from_pretrained(path, dtype=checkpoints.dtype(), **kwargs)  # type: ignore[attr-defined]
        pipeline.set_progress_bar_config(disable=True)
        return pipeline.to(checkpoints.device())

    return checkpoints.load(f"{pipeline_class.__name__}:{served}", load, pipeline_nbytes)


def pipeline_nbytes(pipeline: Any) -> int:
    import torch

    return sum(module_nbytes(c) for c in pipeline.components.values() if isinstance(c, torch.nn.Module))


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh random one when it is None or negative (Replicate's -1)."""
    return secrets.randbelow(2**32 - 1) if seed is None or seed < 0 else seed


#: torch's generators take seeds below 2**64.
SEED_LIMIT = 2**64


def seed_problems(seed: int | None) -> list[tuple[str, str]]:
    """The ``seed`` input's problem, if a generator cannot take it: found at create time, the
    client gets a 422 rather than a prediction failing on torch's overflow."""
    if seed is None or seed < SEED_LIMIT:
        return []
    return [("seed", f"must be less than 2**64, or -1 for a random seed (got {shown(seed)})")]


#: Most denoising steps a request may ask for. The published schemas set no maximum, but the
#: schedulers allocate their timesteps up front: a billion steps is gigabytes before the first one.
MAX_STEPS = 10_000


def steps_problems(name: str, steps: int) -> list[tuple[str, str]]:
    """The ``(name, message)`` problem of a step count no schedule should be built for."""
    if steps <= MAX_STEPS:
        return []
    return [(name, f"must be at most {MAX_STEPS} (got {shown(steps)})")]


def step_reporter(ctx: Context, total: int) -> Callable[[int], None]:
    """A callback for the end of each denoising step: progress, and a chance to stop when canceled."""

    def report(done: int) -> None:
        ctx.check_canceled()
        ctx.progress(done, total)

    return report
