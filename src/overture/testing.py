"""Tiny random checkpoints with the real architectures, written offline.

Tests (and anyone without network access) build one, save it, and load it through the same code
path as real weights: ``overture serve --checkpoint facebook/musicgen-small=<path>``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

#: family → "module:function" that writes its tiny checkpoint into a directory.
_WRITERS = {
    "musicgen": "overture.models.musicgen:write_tiny_checkpoint",
    "musicgen-stereo": "overture.models.musicgen:write_tiny_stereo_checkpoint",
    "musicgen-melody": "overture.models.musicgen:write_tiny_melody_checkpoint",
    "stable-audio": "overture.models.stable_audio:write_tiny_checkpoint",
    "riffusion": "overture.models.riffusion:write_tiny_checkpoint",
}


def tiny_checkpoint(family: str, path: str | Path) -> Path:
    """Write a tiny random checkpoint of ``family`` to ``path`` and return it."""
    try:
        module_name, _, function = _WRITERS[family].partition(":")
    except KeyError:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(_WRITERS)}") from None
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    getattr(importlib.import_module(module_name), function)(target)
    return target
