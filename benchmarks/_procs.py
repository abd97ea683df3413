"""What a server's processes use, read from /proc: CPU time, and the tree of its children (the
model workers), so that a benchmark counts the workers' share beside the server's."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/PID/stat); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """The process's children, theirs, and so on: from ``/proc/PID/task/TID/children`` where the
    kernel has it, else from every process's parent in ``/proc/PID/stat`` (gVisor, for one)."""
    if not Path(f"/proc/{root}/task/{root}/children").exists():
        return scanned_descendants(root)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def scanned_descendants(root: int) -> list[int]:
    """``descendants`` by reading each process's parent from ``/proc/PID/stat``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
