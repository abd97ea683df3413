"""One memory budget (``--model-memory-gb``) for the models loaded in every worker.

Each worker process holds only its own pool's models, but the memory they fill is the machine's
(or the GPU's). Workers report each model they load and each use of one; when a load takes the
total past the budget, the least recently used models, in any worker, are unloaded until it fits
again. The model just loaded is never the one to go: a budget smaller than one model still runs it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("overture")

#: (pool, checkpoint key): two pools that load one checkpoint each hold a copy.
Slot = tuple[str, str]


class MemoryLedger:
    def __init__(self, budget_bytes: int | None, unload: Callable[[str, str], None]):
        self.budget_bytes = budget_bytes
        #: Asks a pool's worker to drop one of its models.
        self._unload = unload
        self._sizes: OrderedDict[Slot, int] = OrderedDict()
        self._lock = threading.Lock()

    def loaded(self, pool: str, key: str, nbytes: int) -> None:
        with self._lock:
            self._sizes[(pool, key)] = nbytes
            self._sizes.move_to_end((pool, key))
            evicted = self._over_budget(keep=(pool, key))
        for slot in evicted:
            log.info("unloaded %s from %s's worker to stay within the memory budget", slot[1], slot[0])
            self._unload(*slot)

    def used(self, pool: str, key: str) -> None:
        with self._lock:
            if (pool, key) in self._sizes:
                self._sizes.move_to_end((pool, key))

    def loaded_models(self) -> list[tuple[str, str, int]]:
        """(pool, checkpoint key, bytes) of each loaded model, least recently used first."""
        with self._lock:
            return [(pool, key, nbytes) for (pool, key), nbytes in self._sizes.items()]

    def forget_pool(self, pool: str) -> None:
        """The pool's worker is gone, and its memory with it."""
        with self._lock:
            for slot in [slot for slot in self._sizes if slot[0] == pool]:
                del self._sizes[slot]

    def _over_budget(self, keep: Slot) -> list[Slot]:
        if self.budget_bytes is None:
            return []
        evicted = []
        while sum(self._sizes.values()) > self.budget_bytes:
            oldest = next(iter(self._sizes))
            if oldest == keep:
                break
            del self._sizes[oldest]
            evicted.append(oldest)
        return evicted
