"""Model weights from the hub: ``overture pull`` (resumed after a kill, refused when gated),
``overture models --local``, ``overture prune``, and a pulled checkpoint serving predictions.

The hub is a stand-in on loopback (``HF_ENDPOINT``) that huggingface_hub itself talks to; the
commands run as a user runs them, in subprocesses, with ``HF_HOME`` in the test's directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import SUBPROCESS_PYTHONPATH, Server, free_port
from hub_stand_in import HubStandIn, Repo
from overture.models.musicgen import OVERTURE_VERSION
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.timeout(180)

#: More than the 10 MiB huggingface_hub writes at a time, so that a killed download leaves some.
BIG = os.urandom(24 * 1024 * 1024)
CHUNK = 10 * 1024 * 1024
#: What a musicgen repo holds beside the files Overture loads: other runtimes' copies of the weights.
NOT_LOADED = ("pytorch_model.bin", "state_dict.bin", "compression_state_dict.bin", "preprocessor_config.json")


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("musicgen", tmp_path_factory.mktemp("tiny") / "musicgen-small")


def env_for(hub: HubStandIn, hf_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "REPLICATE_", "OVERTURE_"))}
    env |= {"PYTHONPATH": SUBPROCESS_PYTHONPATH, "HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home)}
    env |= {"OVERTURE_MODEL_MODULES": "overture_weights_models", **extra}
    return env


def overture(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "overture", *args], capture_output=True, text=True, env=env)


def blob_of(hf_home: Path, repo: str, data: bytes) -> Path:
    return hf_home / "hub" / f"models--{repo.replace('/', '--')}" / "blobs" / hashlib.sha256(data).hexdigest()


def test_a_killed_pull_resumes_where_it_stopped(hub: HubStandIn, tmp_path: Path) -> None:
    hub.repos["overture-tests/big-weights"] = Repo({"weights.bin": BIG, "README.md": b"# not loaded"})
    hub.hold_after["weights.bin"] = CHUNK + 1024 * 1024
    env = env_for(hub, tmp_path / "hf")
    partial = blob_of(tmp_path / "hf", "overture-tests/big-weights", BIG).with_suffix(".incomplete")

    pulling = subprocess.Popen(
        [sys.executable, "-m", "overture", "pull", "tests/big-weights"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size >= CHUNK):
        assert pulling.poll() is None and time.monotonic() < deadline, "the download never wrote its first part"
        time.sleep(0.05)
    pulling.kill()
    pulling.wait(10)
    have = partial.stat().st_size
    assert have == CHUNK

    hub.release.set()
    resumed = overture(env, "pull", "tests/big-weights")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after {have} of {len(BIG)} bytes" in resumed.stderr
    first, second = hub.downloads("weights.bin")
    assert first.range is None
    assert second.range == f"bytes={have}-" and second.sent == len(BIG) - have
    assert not hub.downloads("README.md")
    assert blob_of(tmp_path / "hf", "overture-tests/big-weights", BIG).read_bytes() == BIG

    # The weights now load offline, through the model's own loading path.
    offline = overture({**env, "HF_HUB_OFFLINE": "1"}, "run", "tests/big-weights")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == str(len(BIG))
    again = overture(env, "pull", "tests/big-weights")
    assert again.returncode == 0 and "weights.bin: already here" in again.stderr
    assert len(hub.downloads("weights.bin")) == 2


def test_a_gated_repo_names_its_licence_page_and_opens_with_hf_token(hub: HubStandIn, tmp_path: Path) -> None:
    files = {
        "model_index.json": b'{"_class_name": "StableAudioPipeline"}',
        "vae/config.json": b"{}",
        "model.ckpt": b"!",
    }
    hub.repos["stabilityai/stable-audio-open-1.0"] = Repo(files, gated=True)
    env = env_for(hub, tmp_path / "hf")

    refused = overture(env, "pull", "stackadoc/stable-audio-open-1.0")
    assert refused.returncode == 1
    assert "The hub refused stabilityai/stable-audio-open-1.0: it is gated" in refused.stderr
    assert "https://huggingface.co/stabilityai/stable-audio-open-1.0" in refused.stderr
    assert "HF_TOKEN" in refused.stderr

    pulled = overture({**env, "HF_TOKEN": HubStandIn.TOKEN}, "pull", "stackadoc/stable-audio-open-1.0")
    assert pulled.returncode == 0, pulled.stderr
    assert {r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path} == {
        "model_index.json",
        "config.json",
    }


def test_an_unreachable_hub_fails_the_pull_with_its_address(hub: HubStandIn, tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # a closed port: the connection is refused
    pulled = overture(env_for(hub, tmp_path / "hf") | {"HF_ENDPOINT": nobody}, "pull", "tests/big-weights")
    assert pulled.returncode == 1
    assert f"Could not pull overture-tests/big-weights from {nobody}: " in pulled.stderr
    assert "Traceback" not in pulled.stderr


def test_a_pulled_tiny_musicgen_serves_predictions(
    hub: HubStandIn, tmp_path: Path, tiny_musicgen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo.from_directory(tiny_musicgen)
    repo.files |= {name: b"not loaded" for name in NOT_LOADED}
    hub.repos["facebook/musicgen-small"] = repo
    hf_home = tmp_path / "hf"
    # The server below runs on one thread: pull measures its kernels under the same key.
    kernels = {"OVERTURE_KERNEL_CACHE": str(tmp_path / "kernels"), "OMP_NUM_THREADS": "1"}
    env = env_for(hub, hf_home, **kernels)

    choose = overture(env, "pull", "meta/musicgen")
    assert choose.returncode == 2 and "choose with --model-version" in choose.stderr
    pulled = overture(env, "pull", f"meta/musicgen:{OVERTURE_VERSION}", "--model-version", "small")
    assert pulled.returncode == 0, pulled.stderr
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path}
    assert fetched == {p.name for p in tiny_musicgen.iterdir()}
    # What the first load would measure once per machine was measured here, and stored.
    assert "small: linear kernels:" in pulled.stderr and "stored in" in pulled.stderr, pulled.stderr

    listed = overture({**env, "COLUMNS": "200"}, "models", "--local")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[2].strip(): line for line in listed.stdout.splitlines() if "meta/musicgen" in line}
    assert "│ yes " in rows["small"] and "│ no " in rows["large"]
    size = sum(p.stat().st_size for p in tiny_musicgen.iterdir())
    assert f"{size / 2**20:.1f} MiB" in rows["small"]
    # Memory: counted from the pulled files' headers; for a variant not pulled, the published size.
    assert "~" not in rows["small"] and "~3424.0 M" in rows["large"] and "~12.8 GiB / ~6.4 GiB" in rows["large"]

    # The server finds the pulled weights offline, says so at start and in the model's extension field.
    monkeypatch.setenv("HF_HOME", str(hf_home))
    for name, value in kernels.items():
        monkeypatch.setenv(name, value)
    server = Server(tmp_path / "data").start()
    try:
        with server.http() as http:
            model = http.get("/v1/models/meta/musicgen").json()
        weights = {entry["model_version"]: entry for entry in model["x-overture-weights"]}
        assert weights["small"] == {
            "model_version": "small",
            "repo": "facebook/musicgen-small",
            "revision": "main",
            "ready": True,
        }
        assert weights["large"]["ready"] is False
        prediction = server.client().predictions.create(
            version=OVERTURE_VERSION, input={"model_version": "small", "prompt": "jazz", "duration": 1}
        )
        prediction.wait()
        assert prediction.status == "succeeded", prediction.error
        with server.http() as http:
            assert http.get(prediction.output).content[:4] == b"RIFF"
        assert f"Loading checkpoint facebook/musicgen-small from {hf_home / 'hub'}" in prediction.logs
        log = server.log_path.read_text()
        assert "weights of meta/musicgen: ready: small; not on disk: stereo-melody-large" in log
        assert "read from the kernel cache" in prediction.logs + log
    finally:
        server.stop()


def test_a_corrupt_safetensors_header_makes_a_variant_not_ready_with_its_reason(tmp_path: Path) -> None:
    """Readiness reads the headers of the files an operator maps; a broken one is reported, never a 500."""
    broken = {
        "small": b"\x07\x00",  # cut short inside the length
        "medium": (2**40).to_bytes(8, "little") + b"{}",  # a length past the end of the file
        "large": (11).to_bytes(8, "little") + b"\xff not json!",
    }
    options = []
    for variant, header in broken.items():
        directory = tmp_path / f"musicgen-{variant}"
        directory.mkdir()
        (directory / "config.json").write_text("{}")
        (directory / "model.safetensors").write_bytes(header)
        options += ["--checkpoint", f"facebook/musicgen-{variant}={directory}"]
    server = Server(tmp_path / "data", *options).start()
    try:
        with server.http() as http:
            answer = http.get("/v1/models/meta/musicgen")
            assert answer.status_code == 200, answer.text
            weights = {entry["model_version"]: entry for entry in answer.json()["x-overture-weights"]}
            # The file repaired in place is read again: what is remembered is keyed by its mtime and size.
            (tmp_path / "musicgen-large" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
            repaired = {
                e["model_version"]: e for e in http.get("/v1/models/meta/musicgen").json()["x-overture-weights"]
            }
        unreadable = "model.safetensors is not a readable safetensors file: "
        reasons = {variant: weights[variant].get("reason") for variant in broken}
        assert reasons == {
            "small": unreadable + "2 bytes, fewer than the 8 of the header's length",
            "medium": unreadable + f"its header claims {2**40} bytes, and the file has 2 after the length",
            "large": unreadable + "its header is not JSON ('utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte)",
        }
        assert not any(weights[variant]["ready"] for variant in broken)
        # Absent weights are simply not ready.
        assert weights["stereo-large"]["ready"] is False and "reason" not in weights["stereo-large"]
        assert repaired["large"]["ready"] is True and "reason" not in repaired["large"]
        # The start-up report, from a thread of its own, says the same.
        line = f"weights of meta/musicgen, small: not ready: {weights['small']['reason']}"
        deadline = time.monotonic() + 30
        while line not in server.log_path.read_text():
            assert time.monotonic() < deadline, server.log_path.read_text()
            time.sleep(0.1)
        assert "Traceback" not in server.log_path.read_text()
    finally:
        server.stop()


def test_prune_removes_what_no_model_loads(hub: HubStandIn, tmp_path: Path, tiny_musicgen: Path) -> None:
    repo = Repo.from_directory(tiny_musicgen)
    repo.files |= {name: (name * 100).encode()[:1000] for name in NOT_LOADED}
    hub.repos["facebook/musicgen-small"] = repo
    hub.repos["someone/else"] = Repo({"weights.bin": b"y" * 5000})
    hf_home = tmp_path / "hf"
    env = env_for(hub, hf_home)
    # What Overture did before it declared its files, and what other programs leave in the cache.
    for name in "facebook/musicgen-small", "someone/else":
        script = f"import huggingface_hub; huggingface_hub.snapshot_download({name!r})"
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    snapshot = hf_home / "hub" / "models--facebook--musicgen-small" / "snapshots" / repo.sha
    abandoned = snapshot.parent.parent / "blobs" / "0123abcd.5a5a5a5a.incomplete"
    abandoned.write_bytes(b"z" * 300)
    before = {p.name for p in snapshot.iterdir()}

    dry = overture(env, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for name in NOT_LOADED:
        assert f"would remove {snapshot / name}" in dry.stdout
    assert f"would remove {abandoned}" in dry.stdout
    assert "left alone, no model loads them (--unknown removes them): someone/else" in dry.stdout
    assert "9 entries, would free 4.2 KiB" in dry.stdout, dry.stdout  # 4 pointers, their 4 blobs, the partial
    assert {p.name for p in snapshot.iterdir()} == before

    pruned = overture(env, "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "9 entries, freed 4.2 KiB" in pruned.stdout
    assert {p.name for p in snapshot.iterdir()} == {p.name for p in tiny_musicgen.iterdir()}
    assert not abandoned.exists() and (hf_home / "hub" / "models--someone--else").is_dir()
    listed = overture({**env, "COLUMNS": "200"}, "models", "--local")
    assert any("│ small " in line and "│ yes " in line for line in listed.stdout.splitlines())

    everything = overture(env, "prune", "--unknown")
    assert "someone/else: no model uses this repo" in everything.stdout
    assert not (hf_home / "hub" / "models--someone--else").exists()
