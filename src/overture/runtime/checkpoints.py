"""Finding and keeping model weights: hub ids through the Hugging Face cache, local directories
mapped by the operator, and the LRU of loaded models (``overture.runtime.loaded``) bounded by a
memory budget.

torch and huggingface_hub are imported only when a checkpoint is actually needed, so a server
that runs only the built-in synth model starts without them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from overture.errors import CheckpointMissing
from overture.runtime.loaded import LoadedModels
from overture.runtime.weights import HubWeights, path_in_cache

T = TypeVar("T")


@dataclass
class CheckpointSettings:
    #: Hub id → local directory holding that checkpoint (``--checkpoint ID=DIR``).
    local_dirs: dict[str, Path] = field(default_factory=dict)
    #: Hub id → hub id served in its place, e.g. large → medium on a small GPU.
    substitutes: dict[str, str] = field(default_factory=dict)
    #: When set, only these hub ids (after substitution) are served.
    allowed: frozenset[str] | None = None
    #: Loaded models are evicted, least recently used first, beyond this many bytes.
    memory_budget_bytes: int | None = None
    #: "cuda", "cpu", ... ; None picks CUDA when present.
    device: str | None = None


class Checkpoints:
    def __init__(self, settings: CheckpointSettings | None = None, loaded: LoadedModels | None = None):
        self.settings = settings or CheckpointSettings()
        #: A worker passes its own, which reports to the engine that keeps the budget.
        self._loaded = loaded or LoadedModels(self.settings.memory_budget_bytes)

    # -- where weights are ---------------------------------------------------------------------

    def served(self, requested: str) -> str:
        """The hub id that will actually run for ``requested``; refuses ids the operator excluded."""
        served = self.settings.substitutes.get(requested, requested)
        allowed = self.settings.allowed
        if allowed is not None and served not in allowed:
            raise CheckpointMissing(
                f"Checkpoint {served} is not served by this server (allowed: {', '.join(sorted(allowed)) or 'none'})."
            )
        return served

    def path(self, hub_id: str, weights: HubWeights | None = None) -> Path:
        """A local directory with ``hub_id``'s files: the operator's mapping, else the HF cache
        (downloading when the hub is reachable and ``HF_HUB_OFFLINE`` is not set).

        ``weights`` is the model's declaration of the files it loads (the whole repo when None):
        a download fetches those alone, from ``hub_id`` when the operator substituted it.
        """
        mapped = self.settings.local_dirs.get(hub_id)
        if mapped is not None:
            if not mapped.is_dir():
                raise CheckpointMissing(f"Checkpoint {hub_id} is mapped to {mapped}, which is not a directory.")
            return mapped
        declared = weights.serving(hub_id) if weights is not None else HubWeights(hub_id, files=("*",))
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        return path_in_cache(declared, offline)

    # -- loaded models -------------------------------------------------------------------------

    def load(self, key: str, loader: Callable[[], T], nbytes: Callable[[T], int]) -> T:
        """``loader()``'s result, kept for reuse until the memory budget needs its room."""
        return self._loaded.load(key, loader, nbytes)

    def loaded(self) -> list[str]:
        return self._loaded.keys()

    # -- where to run --------------------------------------------------------------------------

    def device(self) -> str:
        if self.settings.device:
            return self.settings.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def dtype(self) -> Any:
        """Half precision on GPUs (bfloat16 where supported), full precision on CPUs."""
        import torch

        if self.device().startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32


def module_nbytes(module: Any) -> int:
    """Bytes held by a torch module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
