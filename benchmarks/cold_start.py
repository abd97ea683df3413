"""MusicGen cold start: time to the first decoder step of a fresh process, with an empty kernel
cache and with a warm one, against the bare checkpoint load (issue 17).

Random weights with the real ``facebook/musicgen-small`` shape (as ``musicgen.py`` builds them,
cached on disk and shared with it). Each side runs in a fresh Python process, as a server's worker
starts, timed from just before the checkpoint load (the imports, alike for all, are left out):

  bare:  ``load_checkpoint`` alone, the reference of the target;
  empty: what the worker's loader does (``load_checkpoint``, then ``runner.select_kernels``: the
         kernel choice, measured and stored, the cache being empty), then a 5 s request prepared
         (text encoded), joined to a batch (prefill) and its first decoder step;
  warm:  the same, the cache holding what the empty side stored (read and packed, not measured).

The sides run bare, empty, warm in each round, each round with a new, empty cache directory; the
weights file is read once beforehand so that every side loads it from the page cache. Prints each
run, then the best of each side and the ratios to the bare load.

    .venv/bin/python benchmarks/cold_start.py [--rounds 2] [--shape small|smoke] [--dir DIR]

DIR caches the weights (default ~/.cache/overture/musicgen-SHAPE-random); ``--shape smoke`` is a
small model for smoke runs, whose timings mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The issue's target: time to the first decoder step within this many times the bare load.
TARGET = 1.5
SIDES = ("bare", "empty", "warm")
RESULT = "RESULT "


def run_side(side: str, directory: Path) -> dict[str, Any]:
    """One side's timings in seconds, in this (fresh) process."""
    import torch

    from musicgen import PROMPT, Context
    from overture.models.musicgen import MUSICGEN
    from overture.models.musicgen.batching import ContinuousBatch
    from overture.models.musicgen.checkpoint import load_checkpoint
    from overture.models.musicgen.request import Request
    from overture.models.musicgen.runner import prepare, select_kernels

    cpu, start = time.process_time(), time.perf_counter()
    checkpoint = load_checkpoint(directory, "cpu", torch.float32)
    loaded = time.perf_counter()
    result: dict[str, Any] = {"load": loaded - start, "cpu": time.process_time() - cpu}
    if side == "bare":
        return result
    report = select_kernels(checkpoint)
    chosen = time.perf_counter()
    inputs = MUSICGEN.latest_version.inputs.validate({"prompt": PROMPT, "duration": 5, "seed": 1})
    with tempfile.TemporaryDirectory() as scratch:
        prepared = prepare(checkpoint, Context(Path(scratch)), Request.parse(inputs))  # type: ignore[arg-type]
        encoded = time.perf_counter()
        batch = ContinuousBatch(checkpoint)
        batch.join(prepared.generation)
        batch.step()
    stepped = time.perf_counter()
    return {
        **result,
        "kernels": chosen - loaded,
        "measured": 0.0 if report.cached else report.measure_s,
        "cached": report.cached,
        "prepare": encoded - chosen,
        "first_step": stepped - encoded,
        "total": stepped - start,
        "cpu": time.process_time() - cpu,
    }


def spawn(side: str, directory: Path, cache: Path) -> dict[str, Any]:
    """``side`` in a fresh process whose kernel cache is ``cache``."""
    env = {**os.environ, "OVERTURE_KERNEL_CACHE": str(cache)}
    command = [sys.executable, __file__, "--side", side, "--dir", str(directory)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT)]
    if run.returncode or not lines:
        raise SystemExit(f"{side} side failed:\n{run.stdout}{run.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT))
    return result


def describe(side: str, r: dict[str, Any]) -> str:
    if side == "bare":
        return f"bare load {r['load']:.1f} s ({r['cpu']:.1f} s CPU)"
    how = "read from the cache" if r["cached"] else f"measured {r['measured']:.1f} s"
    return (
        f"{side} cache: first step at {r['total']:.1f} s ({r['cpu']:.1f} s CPU): load {r['load']:.1f}, "
        f"kernels {r['kernels']:.1f} ({how}), text {r['prepare']:.2f}, prefill + first step {r['first_step']:.2f}"
    )


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shape", choices=("small", "smoke"), default="small", help="smoke: timings mean nothing")
    parser.add_argument("--dir", type=Path, help="caches the weights (default ~/.cache/overture/musicgen-SHAPE-random)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child process's own side
    args = parser.parse_args()
    args.dir = args.dir or Path.home() / ".cache" / "overture" / f"musicgen-{args.shape}-random"
    if args.side:
        print(RESULT + json.dumps(run_side(args.side, args.dir)), flush=True)
        return

    from _machine import machine_line
    from musicgen import build

    weights = args.dir / "model.safetensors"
    if not weights.exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(args.dir, args.shape)
        print(f"built random musicgen-{args.shape} weights in {time.perf_counter() - started:.0f} s: {args.dir}")
    with open(weights, "rb") as f:  # into the page cache: no side pays for the disk
        while f.read(64 * 2**20):
            pass
    print(machine_line())
    print(
        f"musicgen-{args.shape} shape, random weights, {weights.stat().st_size / 2**30:.1f} GiB; before: {load_line()}"
    )
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="kernel-cache-") as cache:
            for side in SIDES:
                results[side].append(spawn(side, args.dir, Path(cache)))
                print(f"round {round_}: {describe(side, results[side][-1])}", flush=True)
    print(f"after: {load_line()}")
    # The best run is the one other work on the machine disturbed least; CPU time is steadier.
    for clock, field, unit in (("wall", "load", "s"), ("CPU", "cpu", "s CPU")):
        bare = min(r[field] for r in results["bare"])
        empty, warm = (min(r["total" if field == "load" else field] for r in results[side]) for side in SIDES[1:])
        print(
            f"best {clock}: bare load {bare:.1f} {unit}; to the first decoder step: empty cache {empty:.1f} {unit} = "
            f"{empty / bare:.2f}x the bare load, warm cache {warm:.1f} {unit} = {warm / bare:.2f}x"
        )
    bare = min(r["load"] for r in results["bare"])
    warm = min(r["total"] for r in results["warm"])
    verdict = "met" if warm <= TARGET * bare else f"NOT met, by {warm - TARGET * bare:.1f} s"
    print(f"target (issue 17): warm cache within {TARGET}x of the bare load: {warm / bare:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
