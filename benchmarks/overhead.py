"""What metrics and rate limiting cost the API per request, side by side in one run.

Two servers on loopback, the same synth model in their worker processes:
  (a) baseline: ``--no-metrics`` and the rate limits off (``--rate-limit-creates 0 --rate-limit-requests 0``);
  (b) Overture as shipped: ``/metrics`` counting, and each token held to 600 creates and 3,000 other
      requests a minute.
Each round sends the same requests to both, one server after the other: creates with ``Prefer: wait``
(short synth clips, the cache off) and GETs of the predictions made. The load stays under the default
limits, so (b) refuses nothing and both sides do the same work. Prints the server process's CPU time
per request (its overhead: the model runs in the worker processes) and the median latency for each
side, and the difference, which the target wants under 1 ms.

    .venv/bin/python benchmarks/overhead.py [--rounds 3] [--creates 120] [--gets 600] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from _machine import machine_line
from _procs import cpu_seconds
from api import NO_RATE_LIMITS, PROMPTS, TOKEN, start_server

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Side:
    name: str
    options: tuple[str, ...]
    cpu_seconds: float = 0.0
    requests: int = 0
    create_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)


async def round_of(base: str, side: Side, creates: int, gets: int, clients: int, pid: int) -> None:
    """``creates`` predictions, then ``gets`` reads of them, from ``clients`` concurrent clients."""
    made: list[str] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=120, limits=limits) as http:

        async def create(jobs: list[int]) -> None:
            for i in jobs:
                body = {"input": {"prompt": PROMPTS[i % len(PROMPTS)], "duration": 0.5, "seed": i}}
                started = time.perf_counter()
                response = await http.post(
                    "/v1/models/overture/synth/predictions", json=body, headers={"Prefer": "wait"}
                )
                side.create_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 201:
                    raise RuntimeError(f"{side.name}: create answered {response.status_code}: {response.text}")
                made.append(response.json()["id"])

        async def read(jobs: list[int]) -> None:
            for i in jobs:
                started = time.perf_counter()
                response = await http.get(f"/v1/predictions/{made[i % len(made)]}")
                side.get_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{side.name}: get answered {response.status_code}: {response.text}")

        before = cpu_seconds(pid)
        await asyncio.gather(*(create(list(range(c, creates, clients))) for c in range(clients)))
        await asyncio.gather(*(read(list(range(c, gets, clients))) for c in range(clients)))
        side.cpu_seconds += cpu_seconds(pid) - before
        side.requests += creates + gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--creates", type=int, default=120, help="creates per round and side")
    parser.add_argument("--gets", type=int, default=600, help="GETs per round and side")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    # Within a minute, (b) must refuse nothing: its limits would turn the comparison into one of 429s.
    if args.rounds * args.creates > 500 or args.rounds * args.gets > 2500:
        parser.error("keep rounds x creates <= 500 and rounds x gets <= 2500: under the default limits")

    sides = [Side("(a) metrics and rate limits off", ("--no-metrics", *NO_RATE_LIMITS)), Side("(b) as shipped", ())]
    servers = []
    dirs = []
    try:
        for side in sides:
            dirs.append(Path(tempfile.mkdtemp(prefix="overture-overhead-")))
            servers.append(start_server(dirs[-1], *side.options))
        for proc, base in servers:
            # Warm: the worker process started and the synth loaded; not counted.
            asyncio.run(round_of(base, Side("warm-up", ()), args.clients, args.clients, args.clients, proc.pid))
        for _ in range(args.rounds):
            for (proc, base), side in zip(servers, sides, strict=True):
                asyncio.run(round_of(base, side, args.creates, args.gets, args.clients, proc.pid))
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(15)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)

    print(machine_line())
    print(
        f"load per side: {args.rounds} rounds of {args.creates} creates (Prefer: wait, 0.5 s synth clips) "
        f"and {args.gets} GETs, {args.clients} clients; sides alternate within each round"
    )
    per_request = []
    for side in sides:
        ms = 1000 * side.cpu_seconds / side.requests
        per_request.append(ms)
        print(
            f"{side.name}: server CPU {ms:.3f} ms/request; median create {statistics.median(side.create_ms):.1f} ms, "
            f"median GET {statistics.median(side.get_ms):.2f} ms"
        )
    a, b = sides
    print(f"added by metrics and rate limiting: {per_request[1] - per_request[0]:+.3f} ms of server CPU per request")
    print(
        f"median latency added: create {statistics.median(b.create_ms) - statistics.median(a.create_ms):+.2f} ms, "
        f"GET {statistics.median(b.get_ms) - statistics.median(a.get_ms):+.2f} ms"
    )


if __name__ == "__main__":
    main()
