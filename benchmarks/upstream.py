"""What relaying costs: synth predictions through B to its upstream A, against the same
predictions straight to A, in one run (docs/providers.md).

Two servers on loopback: A serves the synth model; B routes ``overture/synth=upstream:a``. Each
prediction is a create with ``Prefer: wait`` followed by the download of its output file, so the
relay's own download from A (outputs come home before success) is counted. Direct and relayed
predictions alternate, one at a time, so that drift of the machine falls on both alike; each pair
uses the same input, the result cache off. Prints each side's median latency and the relay's
overhead per prediction (relayed minus direct, per pair), whose median the target wants at or
under 25 ms.

    .venv/bin/python benchmarks/upstream.py [--predictions 50] [--duration 0.5] [--warmup 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from _machine import machine_line
from api import NO_RATE_LIMITS, PROMPTS, TOKEN, start_server

TARGET_MS = 25.0


def timed_prediction(http: httpx.Client, index: int, duration: float) -> float:
    """Seconds for one create with ``Prefer: wait`` and the download of its output."""
    body = {"input": {"prompt": PROMPTS[index % len(PROMPTS)], "duration": duration, "seed": index}}
    started = time.perf_counter()
    response = http.post("/v1/models/overture/synth/predictions", json=body, headers={"Prefer": "wait"})
    prediction = response.json()
    if response.status_code != 201 or prediction.get("status") != "succeeded":
        raise RuntimeError(f"{http.base_url}: {response.status_code} {prediction}")
    audio = http.get(prediction["output"])
    if audio.status_code != 200 or audio.content[:4] != b"RIFF":
        raise RuntimeError(f"{http.base_url}: output download answered {audio.status_code}")
    return time.perf_counter() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=50)
    parser.add_argument("--duration", type=float, default=0.5, help="seconds of audio per prediction")
    parser.add_argument("--warmup", type=int, default=3, help="predictions on each side before timing")
    args = parser.parse_args()
    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix="overture-upstream-bench-"))
    upstream, upstream_base = start_server(work / "a", *NO_RATE_LIMITS)
    relay = None
    try:
        relay, relay_base = start_server(
            work / "b",
            *NO_RATE_LIMITS,
            "--upstream",
            f"a={upstream_base}",
            "--upstream-token",
            f"a={TOKEN}",
            "--route",
            "overture/synth=upstream:a",
        )
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with (
            httpx.Client(base_url=upstream_base, headers=headers, timeout=120) as direct,
            httpx.Client(base_url=relay_base, headers=headers, timeout=120) as relayed,
        ):
            for i in range(args.warmup):  # worker processes started, connections open
                timed_prediction(direct, 10_000 + i, args.duration)
                timed_prediction(relayed, 20_000 + i, args.duration)
            straight: list[float] = []
            through: list[float] = []
            for i in range(args.predictions):
                # The same input on both sides; the seeds differ between pairs, and the cache is off.
                straight.append(timed_prediction(direct, i, args.duration))
                through.append(timed_prediction(relayed, i, args.duration))
    finally:
        for proc in (relay, upstream):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    overhead = [(b - a) * 1000 for a, b in zip(straight, through, strict=True)]
    median = statistics.median(overhead)
    print(
        f"predictions: {args.predictions} each side, one at a time, {args.duration:g} s synth clips, downloads included"
    )
    print(
        f"straight to A:  median {statistics.median(straight) * 1000:.1f} ms, p90 {quantile(straight, 0.9) * 1000:.1f} ms"
    )
    print(
        f"through B to A: median {statistics.median(through) * 1000:.1f} ms, p90 {quantile(through, 0.9) * 1000:.1f} ms"
    )
    verdict = "met" if median <= TARGET_MS else "NOT met"
    print(
        f"relay overhead per prediction: median {median:.1f} ms, p90 {quantile(overhead, 0.9):.1f} ms "
        f"(target <= {TARGET_MS:g} ms median: {verdict})"
    )


if __name__ == "__main__":
    main()
