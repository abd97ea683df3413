"""Scale-out on Ray: the same synth load on one node and on two, and what Ray adds per prediction.

Runs in one go, side by side, against real servers on loopback (inside a loopback-only network
namespace, which the script enters itself with ``unshare -n``, as root: Ray binds to the
machine's interface address otherwise):
  (a) the process transport: one worker process (``overture serve``), predictions one at a time;
  (b) Ray, one node of one CPU: the same predictions one at a time, then the load, ``--clients``
      at once;
  (c) Ray, two nodes of one CPU each (``--replicas overture/synth=2``): the same load.
Each node, with every process it starts, is pinned to a core of its own (the process worker too,
in (a); never the API server), so "one CPU" means one core. Prints throughput of (b) and (c) and their ratio, and the
median latency per prediction that Ray adds over the process transport ((b) against (a), one at
a time). Tiny MusicGen is left out: its load and step time on one shared core would make the run
minutes long for the same transport figures.

    .venv/bin/python benchmarks/cluster.py [--predictions 80] [--clients 8] [--duration 2] [--sequential 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from _machine import machine_line
from _procs import descendants
from api import TOKEN, load

#: Ray's first predictions wait for their actors to start.
PREFER = "wait=60"
INSIDE = "OVERTURE_BENCH_IN_NETNS"
SRC = Path(__file__).resolve().parent.parent / "src"


def pin(pid: int, core: int) -> None:
    """Pin a process and everything it has started to one core; what it starts later inherits it."""
    for each in [pid, *descendants(pid)]:
        try:
            psutil.Process(each).cpu_affinity([core])
        except psutil.NoSuchProcess:
            pass


def start_server(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "overture", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    log = open(data_dir.parent / f"server-{port}.log", "wb")
    proc = subprocess.Popen([*args, "--token", TOKEN, "--no-cache", *extra], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(data_dir.parent / f'server-{port}.log').read_text()}")
        try:
            httpx.get(f"{base}/health", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def run_load(base: str, requests: int, clients: int, duration: float) -> tuple[float, list[float], int]:
    asyncio.run(load(base, clients, clients, duration, PREFER))  # actors or workers started, code warm
    return asyncio.run(load(base, requests, clients, duration, PREFER))


def cluster(nodes: int) -> Any:
    from ray.cluster_utils import Cluster

    head = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": 100_000_000}
    ray_cluster = Cluster(initialize_head=True, head_node_args=head)
    for core in range(nodes):
        node = ray_cluster.add_node(num_cpus=1, object_store_memory=100_000_000)
        pin(node.all_processes["raylet"][0].process.pid, core)
    ray_cluster.wait_for_nodes()
    return ray_cluster


def repin(ray_cluster: Any) -> None:
    """Pin each node's processes again: Ray may have started workers before the raylet was pinned."""
    for core, node in enumerate(ray_cluster.worker_nodes):
        pin(node.all_processes["raylet"][0].process.pid, core)


def measure(args: argparse.Namespace) -> None:
    # This checkout's code, for the servers and for Ray's workers on every node.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    os.environ["OMP_NUM_THREADS"] = "1"
    work = Path(tempfile.mkdtemp(prefix="overture-bench-cluster-"))
    results: dict[str, Any] = {}
    try:
        (work / "process").mkdir()
        proc, base = start_server(work / "process")
        try:
            asyncio.run(load(base, 2, 1, args.duration, PREFER))
            for worker in descendants(proc.pid):  # the worker process, as a node's actor; the server runs free in both
                pin(worker, 0)
            results["process"] = run_load(base, args.sequential, 1, args.duration)
        finally:
            proc.terminate()
            proc.wait(15)
        for nodes in (1, 2):
            ray_cluster = cluster(nodes)
            try:
                (work / f"ray{nodes}").mkdir()
                proc, base = start_server(
                    work / f"ray{nodes}", "--ray", ray_cluster.address, "--replicas", f"overture/synth={nodes}"
                )
                try:
                    asyncio.run(load(base, 2 * nodes, 2 * nodes, args.duration, PREFER))
                    repin(ray_cluster)
                    if nodes == 1:
                        results["ray-sequential"] = run_load(base, args.sequential, 1, args.duration)
                    results[f"ray{nodes}"] = run_load(base, args.predictions, args.clients, args.duration)
                finally:
                    proc.terminate()
                    proc.wait(15)
            finally:
                ray_cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print(machine_line())
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"load: {args.predictions} synth predictions of {args.duration:g} s, {args.clients} clients; one node = one core"
    )
    failures = sum(result[2] for result in results.values())
    one, two = (args.predictions / results[key][0] for key in ("ray1", "ray2"))
    print(f"(b) ray, one node:   {one:.2f} predictions/s, p50 {np.median(results['ray1'][1]) * 1000:.0f} ms")
    print(f"(c) ray, two nodes:  {two:.2f} predictions/s, p50 {np.median(results['ray2'][1]) * 1000:.0f} ms")
    print(f"ratio two nodes / one node: {two / one:.2f}x (target >= 1.7x)")
    local, remote = (np.median(results[key][1]) * 1000 for key in ("process", "ray-sequential"))
    print(
        f"one at a time, median latency: process transport {local:.1f} ms, ray {remote:.1f} ms; "
        f"ray adds {remote - local:.1f} ms per prediction (target < 20 ms)"
    )
    print(f"failures: {failures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=80)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of audio per prediction")
    parser.add_argument("--sequential", type=int, default=40, help="predictions one at a time, for the latency")
    args = parser.parse_args()
    if os.environ.get(INSIDE) == "1":
        measure(args)
        return
    script = 'ip link set lo up && exec "$@"'
    env = {**os.environ, INSIDE: "1"}
    command = ["unshare", "-n", "bash", "-c", script, "bash", sys.executable, *sys.argv]
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()
