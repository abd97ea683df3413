"""A real multi-node Ray cluster on this machine for tests, and the network namespace it runs in.

Ray binds to the machine's interface address unless loopback is all it can see, and tests may talk
only to loopback. So each Ray test runs itself again inside a network namespace with only ``lo``
(``unshare -n``, as root): ``in_loopback_namespace`` marks such a test. Outside the namespace it
runs that one test in a child pytest there and fails with the child's report; inside, it runs the
test's body. The cluster, the server and the client all live in the child, and end with it.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest

from harness import SUBPROCESS_PYTHONPATH, TESTS_DIR, require

INSIDE = "OVERTURE_TEST_IN_NETNS"
#: Detect a node's loss in about 1.5 s, not Ray's default of about 15 s.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
OBJECT_STORE_BYTES = 100_000_000


def in_loopback_namespace(test: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        if os.environ.get(INSIDE) == "1":
            test(*args, **kwargs)
            return
        require(shutil.which("unshare") is not None and os.geteuid() == 0, "unshare -n as root")
        require(shutil.which("ip") is not None, "ip (iproute2), to bring lo up in the namespace")
        nodeid = f"{os.path.relpath(test.__code__.co_filename, TESTS_DIR.parent)}::{test.__name__}"
        script = 'ip link set lo up && exec "$@"'
        child = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", nodeid]
        result = subprocess.run(
            ["unshare", "-n", "bash", "-c", script, "bash", *child],
            cwd=TESTS_DIR.parent,
            env={**os.environ, INSIDE: "1"},
            capture_output=True,
            text=True,
            timeout=280,
        )
        if result.returncode != 0:
            report = (result.stdout + result.stderr)[-6000:]
            pytest.fail(f"in a loopback-only network namespace, {nodeid} failed:\n{report}", pytrace=False)

    return run


@contextmanager
def ray_cluster(nodes: int = 2, cpus: int = 1) -> Iterator[Any]:
    """A head that runs nothing (it holds Ray's control store, and is never the node killed) and
    ``nodes`` worker nodes of ``cpus`` CPUs each (one actor per CPU): each a real raylet process."""
    from ray.cluster_utils import Cluster

    # Inherited by the raylets and so by the actors: this checkout's code and the test models,
    # and one thread per actor, as two nodes share two cores.
    os.environ["PYTHONPATH"] = SUBPROCESS_PYTHONPATH
    os.environ["OMP_NUM_THREADS"] = "1"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
            "_system_config": FAST_HEALTH_CHECKS,
        },
    )
    try:
        for _ in range(nodes):
            add_node(cluster, cpus)
        yield cluster
    finally:
        cluster.shutdown()


def add_node(cluster: Any, cpus: int = 1) -> Any:
    node = cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    return node


def node_with_id(cluster: Any, node_id_prefix: str) -> Any:
    found = [node for node in cluster.worker_nodes if node.node_id.startswith(node_id_prefix)]
    assert len(found) == 1, (node_id_prefix, [node.node_id for node in cluster.worker_nodes])
    return found[0]


def kill_node(cluster: Any, node: Any) -> None:
    """Lose a machine: its raylet and every process it started, at once (a killed raylet alone
    leaves its actors answering direct calls for a minute)."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    processes = [raylet, *raylet.children(recursive=True)]
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    cluster.remove_node(node, allow_graceful=False)


def actor_processes() -> list[psutil.Process]:
    """The live processes of Overture's pool actors, on any node of this machine."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any("PoolActor" in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
