"""Every script in ``benchmarks/`` runs at its smallest size and prints its summary lines, so that
a benchmark cannot rot unnoticed between the runs recorded in ``benchmarks/RESULTS.md``.

Nothing here times anything: the sizes are far too small for the figures to mean something, and
speed is the benchmarks' business. Each run is a subprocess, as a person would start it; the
kernel choice at load streams 1 MiB per timing instead of 64 (``OVERTURE_KERNEL_SAMPLE_MIB``),
which on small models saves minutes and changes no code path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
#: The machine line every benchmark prints (benchmarks/_machine.py).
MACHINE = r"^machine: .+, \d+ cores, torch \S+, \d+ threads, \d{4}-\d\d-\d\d \d\d:\d\d UTC"
RATIO = r"\d+\.\d+x"

#: Script -> (smallest arguments; "{tmp}" is the test's directory, lines its output must match).
CASES: dict[str, tuple[list[str], list[str]]] = {
    "api.py": (
        ["--requests", "8", "--clients", "2", "--duration", "0.5"],
        [
            r"^overture \(HTTP, Prefer: wait\): .* failures 0$",
            r"^ratio overture/baseline throughput: \d+\.\d+$",
            r"^CPU per prediction: server process \d+\.\d ms \(its overhead\), its worker processes \d+\.\d ms",
        ],
    ),
    "cluster.py": (
        ["--predictions", "4", "--clients", "2", "--duration", "0.5", "--sequential", "2"],
        [
            r"^\(c\) ray, two nodes: +\d+\.\d+ predictions/s",
            rf"^ratio two nodes / one node: {RATIO} \(target >= 1\.7x\)$",
            r"^one at a time, median latency: process transport .* ray adds -?\d+\.\d ms per prediction",
            r"^failures: 0$",
        ],
    ),
    "overhead.py": (
        ["--rounds", "1", "--creates", "4", "--gets", "8", "--clients", "2"],
        [
            r"^\(b\) as shipped: server CPU \d+\.\d+ ms/request; median create",
            r"^added by metrics and rate limiting: [+-]\d+\.\d+ ms of server CPU per request$",
        ],
    ),
    "load.py": (
        ["--predictions", "10", "--clients", "2"],
        [r"^errors: 0, lost or wrong final status: 0$", r"^server RSS MiB first \d+, max \d+, last \d+; open fds"],
    ),
    "batching.py": (
        ["--shape", "smoke", "--dir", "{tmp}/musicgen", "--requests", "2", "--seconds", "1"]
        + ["--staggered", "2", "--interval", "0.5", "--longest", "1", "--gets", "5"],
        [
            r"^this process, loaded by the server's loader: linear kernels: ",
            r"^server, its own load log: +linear kernels: ",
            r"^kernel choice per weight shape and row count, here and in the server: (the same|NOT the same)$",
            r"^\(c\)  overture, 2 concurrent API predictions, polling every 0\.5 s: ",
            r"^\(c\)  overture, 2 concurrent API predictions, polling every 0\.1 s: ",
            rf"^ratio \(c\)/\(b\) {RATIO} at 0\.5 s polling, {RATIO} at 0\.1 s polling  "
            r"differs: batch: .*; kernels: .*; "
            r"threads: \d+ here vs \d+ in its worker process",
            rf"^ratio \(c\)/\(b'\) {RATIO} at 0\.5 s polling, .*differs: batch: one static batch",
            rf"^latency overture vs static \(b'\), static/overture: mean .* = {RATIO}; p50 .* max .* = {RATIO}$",
            r"^  server step rate in \(c\): mid-run .* \d+ steps per prediction .* = \d+\.\d+ steps/s",
            r"^step rate, clients polling every 0\.1 s against every 0\.5 s: mid-run ",
            rf"^target \(issue 13\): \(c\) >= 2\.5x \(b\) at 0\.5 s polling: {RATIO}, ",
            r"^server peak resident memory, with its child processes: \d+\.\d GiB, .*\bserver \(pid \d+\) \d+\.\d, "
            r".*\bworker \(pid \d+\) \d+\.\d",
            r"^server CPU per GET of a finished prediction: \d+\.\d+ ms",
        ],
    ),
    "cold_start.py": (
        ["--shape", "smoke", "--dir", "{tmp}/musicgen", "--rounds", "1"],
        [
            r"^round 1: bare load \d+\.\d s \(\d+\.\d s CPU\)$",
            r"^round 1: empty cache: first step at .* kernels \d+\.\d \(measured ",
            r"^round 1: warm cache: first step at .* kernels \d+\.\d \(read from the cache\), text ",
            rf"^best wall: bare load .* empty cache .* = {RATIO} the bare load, warm cache .* = {RATIO}$",
            rf"^best CPU: bare load .* empty cache .* = {RATIO} the bare load, warm cache .* = {RATIO}$",
            rf"^target \(issue 17\): warm cache within 1\.5x of the bare load: {RATIO}, ",
        ],
    ),
    "gpu_parity.py": (
        ["--frames", "10", "--prompts", "2"],
        [
            # Without a CUDA device, CPU bfloat16 stands in for CUDA's sides, and the script says so.
            r"^(no CUDA device: skipped cuda bfloat16, cuda float16, cuda float32 against cpu float32|tiny mono .*)$",
            r"^  (cpu|cuda) bfloat16 vs cpu float32 \[",
            r"^    free-running: \d+ of \d+ codes agree \(\d+\.\d %\)",
            r"^    same history: \d+ of \d+ greedy choices agree",
            r"^    first prompt alone vs in the batch of 2, (cpu|cuda) bfloat16 both: ",
        ],
    ),
    "musicgen.py": (
        ["--shape", "smoke", "--dir", "{tmp}/musicgen", "--seconds", "1", "--rounds", "1"],
        [r"^best   wall: plain generate .* ratio \d+\.\d+ ", r"^median CPU : plain generate .* ratio \d+\.\d+ "],
    ),
    "linear_kernels.py": (
        ["--shape", "smoke", "--rows", "4", "--select-rows", "4", "--repeats", "1", "--cache", "8", "--text", "4"],
        # The step table's row: M, then the three variants' ms and two ratios.
        [r"^linear kernels: ", r"^load-time cost: measuring ", r"^  4( +\d+\.\d){3}( +\d+\.\d\d){2} "],
    ),
    "riffusion_convert.py": (
        ["--repeats", "1", "--threads", "1"],
        [rf"^speed-up \(best\): {RATIO}; ", r"^mel spectral convergence vs source: reference \d\.\d+, overture "],
    ),
    "stable_audio.py": (
        ["--shape", "smoke", "--seconds", "1", "--steps", "2"],
        [r"^trimmed +: +\d+ latent", r"^full window: +\d+ latent", rf"^speed-up: {RATIO} in total, {RATIO} per step$"],
    ),
    "upstream.py": (
        ["--predictions", "2", "--warmup", "1"],
        [
            r"^straight to A: +median \d+\.\d ms, p90 \d+\.\d ms$",
            r"^through B to A: median \d+\.\d ms, p90 \d+\.\d ms$",
            r"^relay overhead per prediction: median -?\d+\.\d ms, p90 -?\d+\.\d ms "
            r"\(target <= 25 ms median: (met|NOT met)\)$",
        ],
    ),
    "streaming_decode.py": (
        ["--quick", "--frames", "60", "--overhead-seconds", "2"],
        [
            r"^EncodecStream +\d\.\de[-+]\d+ / ",
            r"^encodec_32khz random weights, forget-gate bias \+2: 60 frames",
            r"^one-shot +\d+\.\d+ s  x1\.00  frames decoded x1\.00$",
        ],
    ),
}


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(CASES)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_smoke_run(script: str, tmp_path: Path) -> None:
    arguments, expected = CASES[script]
    # This checkout's src, absolute: the run's directory is the test's, and an installed overture
    # (an editable install of another worktree) must not stand in for it.
    pythonpath = os.pathsep.join(filter(None, [str(BENCHMARKS.parent / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OVERTURE_KERNEL_SAMPLE_MIB": "1", "PYTHONPATH": pythonpath}
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *(a.format(tmp=tmp_path) for a in arguments)],
        capture_output=True, text=True, timeout=220, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    for pattern in [MACHINE, *expected]:
        assert re.search(pattern, run.stdout, re.MULTILINE), f"{pattern!r} not in:\n{run.stdout}"
