"""The operator's riffusion settings (``--riffusion-seed-images``): plain data, so that a worker
process can receive it pickled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RiffusionSettings:
    #: A directory of ``<id>.png`` seed spectrograms used in place of Overture's own; like weights,
    #: files a model reads that the operator provides.
    seed_images: Path | None = None
