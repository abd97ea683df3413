"""The operator's MusicGen settings (``--batch-memory-gb``, ``--batch-slots``).

Plain data without torch, so that the command line can build it and a worker process can receive
it pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

#: On CPU, rows beyond this add time per step about linearly: nothing is gained by more.
MAX_SLOTS = 32


@dataclass(frozen=True)
class MusicGenSettings:
    #: Key/value memory one running batch may take; None: a quarter of the RAM, or half the free
    #: GPU memory.
    batch_memory_bytes: int | None = None
    #: Most rows one running batch holds (guidance takes two per prediction).
    batch_slots: int = MAX_SLOTS
