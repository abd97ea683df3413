"""Load and soak: many concurrent clients creating synth predictions the three ways clients do.

Each client takes the next prediction and, in turn: waits for it synchronously (``Prefer: wait``,
then polls if it is not done), creates it and polls, or creates a longer one and cancels it.
At the end every created prediction must be listed, terminal, and as expected (succeeded, or
canceled for the cancels); any non-2xx answer or exception counts as an error.
Prints p50/p99 latency per route. With ``--minutes``, repeats the workload that long (a soak)
and samples the server's RSS and open file descriptors to show whether they grow.

    .venv/bin/python benchmarks/load.py [--predictions 2000] [--clients 50] [--minutes 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _machine import machine_line
from api import NO_RATE_LIMITS, PROMPTS, TOKEN, start_server

TERMINAL = ("succeeded", "failed", "canceled")
CREATE = "/v1/models/overture/synth/predictions"


class Load:
    def __init__(self, http: httpx.AsyncClient):
        self.http = http
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        #: Prediction id -> the final status this client expects ("canceled" allows "succeeded": it may win the race).
        self.expected: dict[str, str] = {}

    async def call(self, route: str, method: str, url: str, **kwargs: Any) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.errors.append(f"{route}: {type(exc).__name__}: {exc}")
            return None
        self.latency[route].append(time.perf_counter() - started)
        if response.status_code >= 300:
            self.errors.append(f"{route}: HTTP {response.status_code} {response.text[:200]}")
            return None
        return response.json()

    async def poll(self, pid: str) -> None:
        while True:
            body = await self.call("GET /v1/predictions/{id}", "GET", f"/v1/predictions/{pid}")
            if body is None or body["status"] in TERMINAL:
                return
            await asyncio.sleep(0.2)

    async def one(self, i: int) -> None:
        kind = ("sync", "sync", "sync", "sync", "poll", "poll", "poll", "poll", "cancel", "cancel")[i % 10]
        duration = 8.0 if kind == "cancel" else round(random.uniform(0.5, 1.0), 2)
        body = {"input": {"prompt": PROMPTS[i % len(PROMPTS)], "duration": duration, "seed": random.randrange(1 << 30)}}
        if kind == "sync":
            created = await self.call(
                "POST create (Prefer: wait)", "POST", CREATE, json=body, headers={"Prefer": "wait=10"}
            )
        else:
            created = await self.call("POST create", "POST", CREATE, json=body)
        if created is None:
            return
        pid = created["id"]
        self.expected[pid] = "canceled" if kind == "cancel" else "succeeded"
        if kind == "cancel":
            await asyncio.sleep(random.uniform(0.0, 0.5))
            await self.call("POST /v1/predictions/{id}/cancel", "POST", f"/v1/predictions/{pid}/cancel")
        if created["status"] not in TERMINAL:
            await self.poll(pid)

    async def check(self) -> tuple[int, list[str]]:
        """Every prediction created is listed and ended as expected; returns (listed, problems)."""
        seen: dict[str, str] = {}
        path: str | None = "/v1/predictions"
        while path:
            page = await self.call("GET /v1/predictions", "GET", path)
            if page is None:
                break
            seen.update((p["id"], p["status"]) for p in page["results"])
            path = httpx.URL(page["next"]).raw_path.decode() if page["next"] else None
        problems = []
        for pid, expected in self.expected.items():
            status = seen.get(pid)
            if status is None:
                problems.append(f"{pid}: lost")
            elif status != expected and not (expected == "canceled" and status == "succeeded"):
                problems.append(f"{pid}: {status}, expected {expected}")
        return len(seen), problems


def sample(pid: int) -> tuple[float, int]:
    """The server's resident memory (MiB) and open file descriptors."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def run(base: str, server_pid: int, predictions: int, clients: int, minutes: float | None) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    samples: list[tuple[float, float, int]] = []
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers=headers) as http:
        load = Load(http)
        started = time.perf_counter()
        end = started + minutes * 60 if minutes else None
        rounds = 0

        async def sampler() -> None:
            while True:
                samples.append((time.perf_counter() - started, *sample(server_pid)))
                await asyncio.sleep(10)

        sampling = asyncio.create_task(sampler())
        while True:
            counter = iter(range(predictions))

            async def client_loop(shared: Iterator[int]) -> None:
                for i in shared:
                    await load.one(i)

            await asyncio.gather(*(client_loop(counter) for _ in range(clients)))
            rounds += 1
            if end is None or time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - started
        sampling.cancel()
        samples.append((elapsed, *sample(server_pid)))
        listed, problems = await load.check()
    routes = {
        route: {
            "count": len(values),
            "p50_ms": round(float(np.percentile(values, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(values, 99)) * 1000, 1),
        }
        for route, values in sorted(load.latency.items())
    }
    return {
        "predictions": len(load.expected),
        "rounds": rounds,
        "clients": clients,
        "seconds": round(elapsed, 1),
        "listed": listed,
        "errors": load.errors,
        "problems": problems,
        "routes": routes,
        "samples": [{"t": round(t, 1), "rss_mib": round(rss, 1), "fds": fds} for t, rss, fds in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=2000, help="per round")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=None, help="soak: repeat rounds this long")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="overture-load-"))
    # The clients stand for many users behind one token, which its rate limits would throttle.
    proc, base = start_server(data_dir, *NO_RATE_LIMITS)
    try:
        result = asyncio.run(run(base, proc.pid, args.predictions, args.clients, args.minutes))
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(machine_line())
    print(
        f"load: {result['predictions']} predictions in {result['rounds']} round(s), "
        f"{result['clients']} clients, {result['seconds']} s; listed {result['listed']}"
    )
    print(f"errors: {len(result['errors'])}, lost or wrong final status: {len(result['problems'])}")
    for line in (result["errors"] + result["problems"])[:20]:
        print("  " + line)
    print(f"{'route':36} {'count':>7} {'p50 ms':>9} {'p99 ms':>9}")
    for route, stats in result["routes"].items():
        print(f"{route:36} {stats['count']:7d} {stats['p50_ms']:9.1f} {stats['p99_ms']:9.1f}")
    samples = result["samples"]
    rss, fds = [s["rss_mib"] for s in samples], [s["fds"] for s in samples]
    print(f"server RSS MiB first {rss[0]:.0f}, max {max(rss):.0f}, last {rss[-1]:.0f}; "
          f"open fds first {fds[0]}, max {max(fds)}, last {fds[-1]}; {len(samples)} samples, every 10 s and at the end")  # fmt: skip
    print(
        "server samples (s, RSS MiB, open fds): "
        + ", ".join(f"{s['t']:.0f}/{s['rss_mib']:.0f}/{s['fds']}" for s in samples)
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
