"""API throughput and latency beside the model's own time, so the server's overhead is visible.

Runs in one go, side by side:
  (a) baseline: the synth model called directly in this process, one clip after another;
  (b) Overture: the same clips as ``POST /v1/models/overture/synth/predictions`` with ``Prefer: wait``
      from many concurrent clients against a real server subprocess on loopback.
Prints predictions per second, p50/p95/p99 latency of the create call, the ratio, and the CPU
time per prediction of the server process and of its model worker processes.

    .venv/bin/python benchmarks/api.py [--requests 400] [--clients 32] [--duration 0.5] [--no-rate-limits]

The server keeps its default rate limits (600 creates a minute per token), so runs of more than
about 560 requests need ``--no-rate-limits``; run with and without it to see what the limiter costs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from _machine import machine_line
from _procs import cpu_seconds, descendants
from overture.models.audio import encode, normalize
from overture.models.synth.prompt import parse_prompt
from overture.models.synth.render import SAMPLE_RATE, render

TOKEN = "r8_benchmark_token"
PROMPTS = ["techno 128 bpm in A minor", "lofi hip hop 85 bpm", "ambient pads in E major", "rock 140 bpm"]


def baseline(n: int, duration: float) -> float:
    """Seconds per clip for the model alone: render, normalize, encode to WAV."""
    started = time.perf_counter()
    for i in range(n):
        arrangement = parse_prompt(PROMPTS[i % len(PROMPTS)])
        audio = np.concatenate(list(render(arrangement, duration, seed=i)))
        encode(normalize(audio, SAMPLE_RATE, "loudness"), SAMPLE_RATE, "wav")
    return (time.perf_counter() - started) / n


#: Server options that turn the per-token rate limits off.
NO_RATE_LIMITS = ("--rate-limit-creates", "0", "--rate-limit-requests", "0")


def start_server(data_dir: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "overture", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [*args, "--token", TOKEN, "--no-cache", *options], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/health", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


async def load(
    base: str, requests: int, clients: int, duration: float, prefer: str = "wait"
) -> tuple[float, list[float], int]:
    """``requests`` synth predictions with ``Prefer: {prefer}`` from ``clients`` at once: seconds for
    all, each one's latency, and how many did not succeed."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}", "Prefer": prefer}

    async def client_loop(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in counter:
            body = {"input": {"prompt": PROMPTS[i % len(PROMPTS)], "duration": duration, "seed": i}}
            started = time.perf_counter()
            response = await http.post("/v1/models/overture/synth/predictions", json=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 201 or response.json()["status"] != "succeeded":
                failures += 1

    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=0.5, help="seconds of audio per prediction")
    parser.add_argument("--no-rate-limits", action="store_true", help="turn the server's per-token rate limits off")
    args = parser.parse_args()

    per_clip = baseline(min(args.requests, 50), args.duration)
    data_dir = Path(tempfile.mkdtemp(prefix="overture-bench-"))
    proc, base = start_server(data_dir, *(NO_RATE_LIMITS if args.no_rate_limits else ()))
    try:
        asyncio.run(load(base, args.clients, args.clients, args.duration))  # worker started, model warm
        server_before, worker_before = _tree_cpu(proc.pid)
        elapsed, latencies, failures = asyncio.run(load(base, args.requests, args.clients, args.duration))
        server_after, worker_after = _tree_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(data_dir, ignore_errors=True)

    ms = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    served = args.requests / elapsed
    direct = 1 / per_clip
    print(machine_line())
    limits = "off" if args.no_rate_limits else "on"
    print(f"load: {args.requests} predictions of {args.duration} s, {args.clients} clients, rate limits {limits}")
    print(f"baseline (model alone, sequential): {per_clip * 1000:.1f} ms/clip = {direct:.1f} clips/s")
    print(f"overture (HTTP, Prefer: wait):       {served:.1f} predictions/s, failures {failures}")
    print(f"create latency p50 {ms[0]:.0f} ms, p95 {ms[1]:.0f} ms, p99 {ms[2]:.0f} ms")
    print(f"ratio overture/baseline throughput: {served / direct:.2f}")
    # The model runs in worker processes, beside the server rather than under its GIL: the server's
    # overhead is the server process's own CPU time.
    server_ms, worker_ms = (
        1000 * (after - before) / args.requests
        for after, before in ((server_after, server_before), (worker_after, worker_before))
    )
    print(
        f"CPU per prediction: server process {server_ms:.1f} ms (its overhead), its worker processes "
        f"{worker_ms:.1f} ms (the model alone: {per_clip * 1000:.1f} ms)"
    )


def _tree_cpu(server: int) -> tuple[float, float]:
    """CPU seconds used so far by the server process, and by its children (the model workers)."""
    return cpu_seconds(server), sum(cpu_seconds(pid) for pid in descendants(server))


if __name__ == "__main__":
    main()
