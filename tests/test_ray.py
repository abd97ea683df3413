"""``overture serve --ray``: model pools as Ray actors on a real multi-node cluster on this machine,
driven by the real ``replicate`` client; nodes, actors and the server are killed for real.

Each test runs inside a loopback-only network namespace (tests/raycluster.py says why and how).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness import SUBPROCESS_PYTHONPATH, TOKEN, Receiver, Server, free_port, wait_finished
from overture.testing import tiny_checkpoint
from raycluster import (
    actor_processes,
    add_node,
    in_loopback_namespace,
    kill_node,
    node_with_id,
    ray_cluster,
    wait_for,
)

NODE_LINE = re.compile(r"Running on Ray node ([0-9a-f]{12}) ")
SLOW = {"steps": 40, "step_seconds": 0.1}


def nodes_in(logs: str) -> list[str]:
    """The Ray nodes a prediction ran on, in order, from its logs."""
    return NODE_LINE.findall(logs or "")


def ray_server(tmp_path: Path, cluster, *extra: str) -> Server:
    return Server(tmp_path / "overture-data", "--ray", cluster.address, *extra)


def running_on(http: httpx.Client, pid: str) -> str:
    """The node a prediction runs on, once it has made a step there."""

    def node() -> str | None:
        body = http.get(f"/v1/predictions/{pid}").json()
        lines = (body["logs"] or "").splitlines()
        placed = [i for i, line in enumerate(lines) if NODE_LINE.search(line)]
        stepped = placed and placed[-1] < len(lines) - 1  # its progress line follows
        return nodes_in(lines[placed[-1]])[0] if stepped and body["status"] == "processing" else None

    return wait_for(node, 60, f"prediction {pid} to run a step")


@in_loopback_namespace
def test_predictions_spread_over_both_nodes_and_files_come_back_whole(tmp_path: Path) -> None:
    musicgen = tiny_checkpoint("musicgen", tmp_path / "musicgen")
    # Two CPUs a node: an actor of each pool on each.
    with ray_cluster(nodes=2, cpus=2) as cluster:
        srv = ray_server(
            tmp_path,
            cluster,
            *("--replicas", "overture/synth=auto", "--replicas", "meta/musicgen=2"),
            # Two checkpoints (the same tiny weights under two hub ids), loaded under two keys.
            *("--checkpoint", f"facebook/musicgen-small={musicgen}"),
            *("--checkpoint", f"facebook/musicgen-medium={musicgen}"),
        ).start()
        try:
            client = srv.client()
            synth = [
                client.predictions.create(
                    model="overture/synth", input={"prompt": f"calm piano in C major, take {i}", "duration": 3}
                )
                for i in range(4)
            ]
            # Two at once, before either actor has loaded a model: the least loaded actor takes each.
            tiny = [
                client.predictions.create(
                    model="meta/musicgen", input={"prompt": "drone", "model_version": version, "duration": 1}
                )
                for version in ("small", "medium")
            ]
            with srv.http() as http:
                for group in (synth, tiny):
                    ended = [wait_finished(http, p.id, timeout=180) for p in group]
                    for body in ended:
                        assert body["status"] == "succeeded", (body["error"], body["logs"])
                        audio = http.get(body["output"])
                        assert audio.status_code == 200 and audio.content[:4] == b"RIFF", audio.content[:16]
                    used = {node for body in ended for node in nodes_in(body["logs"])}
                    assert used == {node.node_id[:12] for node in cluster.worker_nodes}, used
                # Then, one at a time, each checkpoint's next prediction goes to the actor that loaded it.
                loaded_on = dict(zip(("small", "medium"), (nodes_in(body["logs"]) for body in ended), strict=True))
                for version in ("medium", "small"):
                    again = client.predictions.create(
                        model="meta/musicgen", input={"prompt": "drone", "model_version": version, "duration": 1}
                    )
                    body = wait_finished(http, again.id, timeout=120)
                    assert body["status"] == "succeeded", (body["error"], body["logs"])
                    assert nodes_in(body["logs"]) == loaded_on[version], (version, body["logs"], loaded_on)
                    assert "Loading checkpoint" not in body["logs"], body["logs"]
        finally:
            srv.stop()


@in_loopback_namespace
def test_a_lost_node_reruns_its_prediction_once_elsewhere_then_gives_up(tmp_path: Path) -> None:
    receiver = Receiver()
    with ray_cluster(nodes=2) as cluster:
        srv = ray_server(tmp_path, cluster).start()
        try:
            client = srv.client()
            hook = {"webhook": f"{receiver.url}/hook", "webhook_events_filter": ["completed"]}
            first = client.predictions.create(model="tests/steps", input=SLOW, **hook)
            with srv.http() as http:
                lost_node = running_on(http, first.id)
                kill_node(cluster, node_with_id(cluster, lost_node))
                assert http.get("/health").status_code == 200
                body = wait_finished(http, first.id, timeout=120)
                assert body["status"] == "succeeded", body
                assert f"The Ray node {lost_node} (127.0.0.1) running this prediction was lost." in body["logs"]
                assert "Running this prediction again." in body["logs"]
                ran_on = nodes_in(body["logs"])
                assert len(ran_on) == 2 and ran_on[0] == lost_node and ran_on[1] != lost_node, ran_on

                # A second loss of the same prediction is one more than --max-attempts (2) allows.
                add_node(cluster)
                second = client.predictions.create(model="tests/steps", input=SLOW, **hook)
                kill_node(cluster, node_with_id(cluster, running_on(http, second.id)))
                wait_for(
                    lambda: len(nodes_in(http.get(f"/v1/predictions/{second.id}").json()["logs"])) == 2, 60, "a rerun"
                )
                again = running_on(http, second.id)
                kill_node(cluster, node_with_id(cluster, again))
                failed = wait_finished(http, second.id, timeout=120)
            assert failed["status"] == "failed", failed
            assert failed["error"] == f"The Ray node {again} (127.0.0.1) running this prediction was lost."
            for pid in (first.id, second.id):
                receiver.wait_for(lambda pid=pid: any(json.loads(r["body"])["id"] == pid for r in receiver.delivered()))
            time.sleep(2)  # a second completed webhook would come in this time
            completed = [json.loads(r["body"]) for r in receiver.delivered()]
            assert sorted(c["id"] for c in completed) == sorted([first.id, second.id]), completed
        finally:
            srv.stop()
            receiver.httpd.shutdown()


@in_loopback_namespace
def test_a_dead_actor_is_replaced(tmp_path: Path) -> None:
    with ray_cluster(nodes=2) as cluster:
        srv = ray_server(tmp_path, cluster).start()
        try:
            client = srv.client()
            prediction = client.predictions.create(model="tests/steps", input=SLOW)
            with srv.http() as http:
                node = running_on(http, prediction.id)
                (actor,) = actor_processes()
                actor.send_signal(signal.SIGKILL)
                body = wait_finished(http, prediction.id, timeout=120)
            assert body["status"] == "succeeded", body
            assert f"The model's Ray actor on node {node} (127.0.0.1) died" in body["logs"]
            assert len(nodes_in(body["logs"])) == 2
            assert [p.pid for p in actor_processes()] != [actor.pid]
        finally:
            srv.stop()


@in_loopback_namespace
def test_cancel_reaches_the_remote_actor(tmp_path: Path) -> None:
    with ray_cluster(nodes=2) as cluster:
        srv = ray_server(tmp_path, cluster).start()
        try:
            client = srv.client()
            prediction = client.predictions.create(model="tests/steps", input={"steps": 200, "step_seconds": 0.1})
            with srv.http() as http:
                running_on(http, prediction.id)
                (actor,) = actor_processes()
                # A second waits in the actor's queue, and its place there shows (its place in that actor's queue).
                after = client.predictions.create(model="tests/steps", input={"steps": 1})
                wait_for(
                    lambda: http.get(f"/v1/predictions/{after.id}").json().get("queue_position") == 1,
                    30,
                    "the queued prediction's queue_position",
                )
                prediction.cancel()
                body = wait_finished(http, prediction.id, timeout=10)
                assert body["status"] == "canceled", body
                # The actor stopped the job at its next step and lives on for the next one.
                assert wait_finished(http, after.id, timeout=60)["status"] == "succeeded"
            assert [p.pid for p in actor_processes()] == [actor.pid]
            assert "finished 200 steps" not in body["logs"]
        finally:
            srv.stop()


@in_loopback_namespace
def test_a_server_restart_runs_busy_predictions_once_and_loses_none(tmp_path: Path) -> None:
    with ray_cluster(nodes=2) as cluster:
        srv = ray_server(tmp_path, cluster)
        srv.start()
        busy: list[int] = []
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                busy.append(len(actor_processes()))

        try:
            client = srv.client()
            prediction = client.predictions.create(model="tests/steps", input=SLOW)
            with srv.http() as http:
                running_on(http, prediction.id)
            watcher = threading.Thread(target=watch)
            watcher.start()
            srv.kill()
            srv.start()
            with srv.http() as http:
                body = wait_finished(http, prediction.id, timeout=120)
            watching.set()
            watcher.join()
            assert body["status"] == "succeeded", body
            assert "Server restarted while this prediction ran; running it again." in body["logs"]
            assert max(busy) == 1, "two actors ran the prediction at once"
        finally:
            srv.stop()


@in_loopback_namespace
def test_a_lost_cluster_keeps_predictions_waiting_then_fails_them_while_the_api_answers(tmp_path: Path) -> None:
    with ray_cluster(nodes=1) as cluster:
        srv = ray_server(tmp_path, cluster, "--ray-wait", "4").start()
        address = cluster.address
        try:
            client = srv.client()
            busy = client.predictions.create(model="tests/steps", input=SLOW)
            with srv.http() as http:
                node = running_on(http, busy.id)
            kill_node(cluster, cluster.head_node)  # Ray's control store
            started = time.monotonic()
            predictions = [
                client.predictions.create(model="overture/synth", input={"prompt": "piano", "duration": 1})
                for _ in range(3)
            ]
            with srv.http() as http:
                time.sleep(2)
                assert http.get("/health").status_code == 200
                for prediction in predictions:
                    assert http.get(f"/v1/predictions/{prediction.id}").json()["status"] == "starting"
                ended = []
                for prediction in predictions:
                    ended.append((wait_finished(http, prediction.id, timeout=60), time.monotonic() - started))
                assert http.get("/health").status_code == 200
            for body, _ in ended:
                assert body["status"] == "failed", body
                assert body["error"] == (
                    f"Could not start the model's worker: The Ray cluster at {address} has not answered for 4 s."
                )
            # Each waited --ray-wait once, together, not one after another.
            waited = [seconds for _, seconds in ended]
            assert 4 <= waited[0] < 30 and waited[-1] - waited[0] < 1.5, waited
            # The actor that was running on a worker node kept serving its prediction to the end,
            # and takes the next one of its pool.
            with srv.http() as http:
                body = wait_finished(http, busy.id, timeout=60)
                assert body["status"] == "succeeded", body
                assert nodes_in(body["logs"]) == [node] and "finished 40 steps" in body["logs"], body["logs"]
                after = client.predictions.create(model="tests/steps", input={"steps": 1})
                body = wait_finished(http, after.id, timeout=30)
            assert body["status"] == "succeeded" and nodes_in(body["logs"]) == [node], body
        finally:
            srv.stop()


def test_an_unreachable_cluster_stops_the_server_at_start_with_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    env = {"PYTHONPATH": SUBPROCESS_PYTHONPATH, "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "overture", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path)]
    result = subprocess.run([*args, "--ray", f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=60)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Cannot reach the Ray cluster at 127.0.0.1:{port}: [Errno 111] Connection refused." in said, said
    assert "Traceback" not in said


def test_ray_that_cannot_be_imported_stops_the_server_at_start_saying_how_to_install_it(tmp_path: Path) -> None:
    # A ``ray`` package first on the path that fails to import, as a missing or broken install does.
    broken = tmp_path / "broken" / "ray"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('ray is not installed here')\n")
    env = {"PYTHONPATH": f"{broken.parent}:{SUBPROCESS_PYTHONPATH}", "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "overture", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
    result = subprocess.run([*args, "--ray", "auto"], env=env, capture_output=True, text=True, timeout=60)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--ray needs the ray package, which cannot be imported here (ray is not installed here)." in said, said
    assert "pip install 'overture[ray]' (from a clone: pip install -e '.[ray]')" in said, said
    assert "Traceback" not in said


def test_a_server_without_ray_does_not_load_it(server: Server) -> None:
    client = server.client()
    prediction = client.predictions.create(model="overture/synth", input={"prompt": "piano", "duration": 1})
    with server.http() as http:
        assert wait_finished(http, prediction.id, timeout=60)["status"] == "succeeded"
    assert server.process is not None
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "_raylet" not in maps and "/ray/" not in maps


def serve_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], env: dict[str, str], config: str
):
    """``overture serve`` in this process, up to the settings it would serve with (none when it
    refuses them), and what it said."""
    import uvicorn
    from typer.testing import CliRunner

    import overture.api.app
    from overture.cli import app
    from overture.config import Settings

    served: list[Settings] = []
    monkeypatch.setattr(overture.api.app, "create_app", served.append)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    config_file = tmp_path / "overture.toml"
    config_file.write_text(config)
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--token", TOKEN, "--config", str(config_file), *options]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "1000", **env})
    return (served[0] if served else None), result


@pytest.mark.parametrize(
    ("options", "env", "config", "words"),
    [
        (["--replicas", "overture/synth=0"], {}, "", "--replicas: overture/synth: expected a count of at least 1"),
        (["--replicas", "overture/synth"], {}, "", "--replicas: expected FROM=TO, got 'overture/synth'"),
        (["--gpus-per-worker", "meta/musicgen=1.5"], {}, "", "--gpus-per-worker: meta/musicgen: expected a fraction"),
        ([], {"OVERTURE_GPUS_PER_WORKER": "meta/musicgen=lots"}, "", "--gpus-per-worker: meta/musicgen: expected"),
        (["--max-attempts", "0"], {}, "", "--max-attempts"),
        ([], {}, "max_attempts = 0\n", "--config: max_attempts must be a whole number of at least 1, not 0"),
        ([], {}, "ray_wait = -1\n", "--config: ray_wait must be a number of seconds above 0, not -1"),
        # Ray Client cannot carry the streaming calls that bring the actors' events back.
        (["--ray", "ray://10.0.0.1:10001"], {}, "", "--ray: ray://10.0.0.1:10001: Ray Client (ray://) addresses are"),
        ([], {}, 'ray = "ray://head:10001"\n', "Run the server on a node of the cluster and use --ray HOST:PORT"),
        (["--ray", "foo"], {}, "", "--ray: expected auto, local or the Ray head's HOST:PORT, got 'foo'"),
        ([], {}, "replicas = 3\n", '--config: replicas must be a table, such as [replicas] "meta/musicgen" = 2'),
        ([], {}, "gpus_per_worker = [1]\n", "--config: gpus_per_worker must be a table"),
        ([], {}, '[gpus_per_worker]\n"meta/musicgen" = [1]\n', "--gpus-per-worker: meta/musicgen: expected a"),
        ([], {}, '[gpus_per_worker]\n"meta/musicgen" = true\n', "meta/musicgen: expected a fraction of one GPU or"),
        ([], {}, '[replicas]\n"meta/musicgen" = [2]\n', "--replicas: meta/musicgen: expected a count of at least 1"),
    ],
)
def test_bad_cluster_options_stop_the_server_at_start_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], env: dict[str, str], config: str, words: str
) -> None:
    settings, result = serve_settings(tmp_path, monkeypatch, options, env, config)
    assert settings is None and result.exit_code == 2 and words in result.output, result.output


@pytest.mark.parametrize(
    ("options", "env", "config", "expected"),
    [
        ([], {}, "", (None, {}, {}, 60.0, 2)),
        (
            ["--ray", "auto", "--replicas", "meta/musicgen=auto", "--replicas", "overture/synth=2"]
            + ["--gpus-per-worker", "meta/musicgen=0.5", "--ray-wait", "5", "--max-attempts", "3"],
            {},
            "",
            ("auto", {"meta/musicgen": "auto", "overture/synth": 2}, {"meta/musicgen": 0.5}, 5.0, 3),
        ),
        (
            [],
            {"OVERTURE_RAY": "10.0.0.1:6379", "OVERTURE_REPLICAS": "overture/synth=3", "OVERTURE_MAX_ATTEMPTS": "1"},
            "",
            ("10.0.0.1:6379", {"overture/synth": 3}, {}, 60.0, 1),
        ),
        (
            ["--replicas", "overture/synth=4"],
            {},
            'ray = "local"\nray_wait = 7\nmax_attempts = 4\n[replicas]\n"overture/synth" = 1\n"meta/musicgen" = 2\n'
            '[gpus_per_worker]\n"meta/musicgen" = 2\n',
            ("local", {"overture/synth": 4, "meta/musicgen": 2}, {"meta/musicgen": 2.0}, 7, 4),
        ),
    ],
)
def test_cluster_options_reach_the_settings_from_option_env_or_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], env: dict[str, str], config: str, expected
) -> None:
    for name in ("OVERTURE_RAY", "OVERTURE_REPLICAS", "OVERTURE_GPUS_PER_WORKER", "OVERTURE_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    settings, result = serve_settings(tmp_path, monkeypatch, options, env, config)
    assert settings is not None, result.output
    got = (settings.ray_address, settings.replicas, settings.gpus_per_worker)
    assert (*got, settings.ray_wait_seconds, settings.max_attempts) == expected
