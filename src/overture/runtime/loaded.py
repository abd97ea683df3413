"""The LRU of loaded models in one process. A loaded model stays for reuse until loading another
would pass the budget; then the least recently used go first, as many as it takes.

In a server's worker the budget is the engine's, across every worker (``engine/memory.py``): the
worker's LRU has none of its own, reports each load and use, and unloads what the engine says."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Loaded:
    value: Any
    nbytes: int


class LoadedModels:
    def __init__(
        self,
        budget_bytes: int | None = None,
        on_load: Callable[[str, int], None] | None = None,
        on_use: Callable[[str], None] | None = None,
    ):
        #: Loaded models are evicted, least recently used first, beyond this many bytes; None: never.
        self.budget_bytes = budget_bytes
        #: Told of each model loaded (key, bytes), and of each reuse of one.
        self._on_load = on_load
        self._on_use = on_use
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()

    def load(self, key: str, loader: Callable[[], T], nbytes: Callable[[T], int]) -> T:
        """``loader()``'s result, kept for reuse until the memory budget needs its room."""
        with self._lock:
            entry = self._loaded.get(key)
            if entry is not None:
                self._loaded.move_to_end(key)
                if self._on_use is not None:
                    self._on_use(key)
                return entry.value
            value = loader()
            size = nbytes(value)
            self._loaded[key] = _Loaded(value, size)
            self._evict(keep=key)
        if self._on_load is not None:
            self._on_load(key, size)
        return value

    def unload(self, key: str) -> None:
        """Drop a model; a prediction still running on it keeps it until it ends."""
        with self._lock:
            self._loaded.pop(key, None)

    def keys(self) -> list[str]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def _evict(self, keep: str) -> None:
        budget = self.budget_bytes
        if budget is None:
            return
        while sum(e.nbytes for e in self._loaded.values()) > budget and len(self._loaded) > 1:
            oldest = next(iter(self._loaded))
            if oldest == keep:
                break
            del self._loaded[oldest]
