"""``--model-memory-gb``: one budget for the models loaded in every worker process. Loaded models
stay loaded until loading another would pass the budget; then the least recently used go first,
in whichever worker holds them, as many as it takes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import replicate

from harness import Server
from overture.models import riffusion, stable_audio
from overture.models.diffusion import pipeline_nbytes
from overture.testing import tiny_checkpoint

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_thread")]

STABLE_AUDIO = f"StableAudioPipeline:{stable_audio.HUB_ID}"
RIFFUSION = f"StableDiffusionPipeline:{riffusion.HUB_ID}"
#: Plain weights of a test model, as large as riffusion's tiny pipeline.
WEIGHTS = "tests/weights"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from diffusers import StableAudioPipeline, StableDiffusionPipeline

    root = tmp_path_factory.mktemp("checkpoints")
    stable_audio_dir = tiny_checkpoint("stable-audio", root / "stable-audio")
    riffusion_dir = tiny_checkpoint("riffusion", root / "riffusion")
    # The bytes the server counts for each (its parameters and buffers).
    stable_audio_bytes = pipeline_nbytes(StableAudioPipeline.from_pretrained(stable_audio_dir))
    riffusion_bytes = pipeline_nbytes(
        StableDiffusionPipeline.from_pretrained(riffusion_dir, safety_checker=None, requires_safety_checker=False)
    )
    (root / "weights").mkdir()
    (root / "weights" / "weights.bin").write_bytes(bytes(riffusion_bytes))
    # Any two fit; all three do not.
    budget = stable_audio_bytes + riffusion_bytes + riffusion_bytes // 2
    srv = Server(
        tmp_path_factory.mktemp("data") / "overture-data",
        "--model-memory-gb",
        str(budget / 2**30),
        "--checkpoint",
        f"{stable_audio.HUB_ID}={stable_audio_dir}",
        "--checkpoint",
        f"{riffusion.HUB_ID}={riffusion_dir}",
        "--checkpoint",
        f"{WEIGHTS}={root / 'weights'}",
        "--no-cache",  # every prediction runs its model, and so uses its checkpoint
    )
    yield srv.start()
    srv.stop()


def loaded(client: replicate.Client, hub_id: str = "") -> list[str]:
    """What the ``tests/weights`` worker holds, after loading ``hub_id`` if given."""
    return client.run("tests/weights", input={"hub_id": hub_id})


def unloaded(server: Server) -> list[str]:
    """The models the server unloaded for the budget so far, oldest first."""
    return re.findall(r"unloaded (\S+) from \S+'s worker to stay within the memory budget", server.log_path.read_text())


def test_loading_past_the_budget_unloads_the_least_recently_used_in_any_worker(
    client: replicate.Client, server: Server
) -> None:
    def stable_audio_clip() -> None:
        client.run("stackadoc/stable-audio-open-1.0", input={"prompt": "pads", "seconds_total": 1, "steps": 1})

    def riffusion_clip() -> None:
        client.run("riffusion/riffusion", input={"num_inference_steps": 2, "denoising": 0.5})

    stable_audio_clip()
    riffusion_clip()
    stable_audio_clip()  # used again: riffusion is now the least recently used
    assert unloaded(server) == []
    assert loaded(client, WEIGHTS) == [WEIGHTS]
    assert unloaded(server) == [RIFFUSION]
    # Loaded again, riffusion makes room: Stable Audio alone would not free enough, so both go,
    # the weights from the worker of another model.
    riffusion_clip()
    assert unloaded(server) == [RIFFUSION, STABLE_AUDIO, WEIGHTS]
    assert loaded(client) == []
