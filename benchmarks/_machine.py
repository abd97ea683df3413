"""The machine line every benchmark prints first, so that a recorded figure names the CPU, cores,
torch threads and date it was measured on, from the run itself rather than from memory."""

from __future__ import annotations

import datetime
import os
import platform

import torch


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name() -> str | None:
    """``<GPU> (<memory> GiB), CUDA <version>`` of the first CUDA device, or None without one."""
    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"


def machine_line() -> str:
    """``machine: <CPU>, <n> cores, torch <version>, <t> threads, <UTC date and time>``, and where
    there is a CUDA device, ``, GPU <name> (<memory> GiB), CUDA <version>``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu = gpu_name()
    return (
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {now}" + (f", GPU {gpu}" if gpu else "")
    )
