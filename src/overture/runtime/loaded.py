"""The LRU of loaded models that every model of a server shares: one budget for all of them, as
they share one machine's memory. A loaded model stays for reuse until loading another would pass
the budget; then the least recently used go first, as many as it takes."""

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
    def __init__(self, budget_bytes: int | None = None):
        #: Loaded models are evicted, least recently used first, beyond this many bytes; None: never.
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()

    def load(self, key: str, loader: Callable[[], T], nbytes: Callable[[T], int]) -> T:
        """``loader()``'s result, kept for reuse until the memory budget needs its room."""
        with self._lock:
            entry = self._loaded.get(key)
            if entry is not None:
                self._loaded.move_to_end(key)
                return entry.value
            value = loader()
            size = nbytes(value)
            self._loaded[key] = _Loaded(value, size)
            self._evict(keep=key)
            return value

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
