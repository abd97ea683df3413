"""Measured kernel choices kept on disk, so that a model's later starts reuse its first one's.

Why: choosing a MusicGen decoder's linear kernels (``overture.runtime.linear``) times every
candidate at several row counts, about 11 s on the project's 2-core CPU, three times the
checkpoint's own load. The choice depends only on what the key names (the machine, the torch
build, the thread count, the weight shapes, the options and the selection code), never on the
weights' values, so it is measured once per key and read back afterwards.

Where: ``$OVERTURE_KERNEL_CACHE`` when set (``off`` turns the cache off), else
``$XDG_CACHE_HOME/overture/kernels`` (``~/.cache/overture/kernels``). A cache directory, not a
server's data directory: the choice belongs to the machine and the model, like the checkpoints in
the Hugging Face cache beside it, so every server on the machine and ``overture pull`` (which has
no data directory) share it, and deleting it loses nothing but time.

One JSON file per key, named by the key's hash and holding the key itself, written to a temporary
file and renamed into place: two worker processes measuring at once each leave a whole file, the
last one staying. A file that cannot be read, does not parse or holds another key is ignored (the
choice is measured again and the file rewritten); a directory that cannot be written costs the
next start its measurement again, never a failed load.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable relocating the cache (a directory) or turning it off (``off``).
ENV = "OVERTURE_KERNEL_CACHE"
OFF = "off"
#: Version of the file layout; a file of another version is ignored.
FORMAT = 1
#: /proc/cpuinfo fields that say which CPU this is and what it can run (x86 and Arm names); the
#: rest (clock, core ids, bogomips) changes from core to core and boot to boot.
CPU_FIELDS = (
    "vendor_id",
    "model name",
    "cpu family",
    "model",
    "stepping",
    "cache size",
    "flags",
    "CPU implementer",
    "CPU architecture",
    "CPU variant",
    "CPU part",
    "Features",
)
#: Environment variables that cap the instruction sets torch, oneDNN or MKL use, so change timings.
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")

Key = dict[str, Any]


def default_directory() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "overture" / "kernels"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _cpuinfo() -> dict[str, str]:
    """The first processor's identifying fields from /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break  # the first processor's block is enough: they are alike
                    continue
                name, _, value = line.partition(":")
                if name.strip() in CPU_FIELDS:
                    fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def machine_fingerprint() -> dict[str, str]:
    """What a timing depends on besides the work itself: the CPU, the torch build and the
    environment variables that limit the instruction sets its libraries use."""
    import torch

    cpu = _cpuinfo()
    return {
        "arch": platform.machine(),
        "cpu": cpu.get("model name") or platform.processor() or "unknown",
        "cpuinfo": _digest(json.dumps(cpu, sort_keys=True)),
        "torch": torch.__version__,
        # The build configuration names the MKL and oneDNN versions and the compiler flags.
        "torch_build": _digest(torch.__config__.show()),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": _digest(json.dumps({name: os.environ.get(name) for name in ISA_ENV})),
    }


def _normal(key: Key) -> Key:
    """The key as it reads back from JSON (tuples become lists), for comparing with a file's."""
    normal: Key = json.loads(json.dumps(key, sort_keys=True))
    return normal


@dataclass(frozen=True)
class KernelCache:
    """A directory of kernel choices, one file per key."""

    directory: Path

    @classmethod
    def from_env(cls) -> KernelCache | None:
        """The cache ``OVERTURE_KERNEL_CACHE`` names (the default directory when unset), or None
        when it says ``off``."""
        raw = os.environ.get(ENV, "").strip()
        if raw.lower() == OFF:
            return None
        return cls(Path(raw).expanduser() if raw else default_directory())

    def path(self, key: Key) -> Path:
        return self.directory / f"{_digest(json.dumps(key, sort_keys=True))[:32]}.json"

    def get(self, key: Key) -> dict[str, Any] | None:
        """The value stored under ``key``, or None when there is none that can be trusted."""
        path = self.path(key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("kernel cache: cannot read %s (%s); measuring again", path, exc)
            return None
        try:
            entry = json.loads(text)
        except ValueError:
            log.warning("kernel cache: %s is not valid JSON; measuring again", path)
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != _normal(key):
            log.warning("kernel cache: %s holds another key or format; measuring again", path)
            return None
        value = entry.get("value")
        if not isinstance(value, dict):
            log.warning("kernel cache: %s holds no choice; measuring again", path)
            return None
        return value

    def put(self, key: Key, value: dict[str, Any]) -> Path | None:
        """Store ``value`` under ``key`` atomically; the file, or None if it could not be written."""
        path = self.path(key)
        entry = {
            "format": FORMAT,
            "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "key": key,
            "value": value,
        }
        temporary: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f, sort_keys=True, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)  # atomic: readers see the old file or the new one, whole
            return path
        except (OSError, TypeError, ValueError) as exc:
            log.warning("kernel cache: cannot write %s (%s); the next start measures again", path, exc)
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            return None
