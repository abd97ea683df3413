"""``--model-memory-gb``: loaded models stay loaded, one LRU for every model, until loading another
would pass the budget; then the least recently used go first, as many as it takes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import replicate

from overture.models import riffusion, stable_audio
from overture.models.diffusion import pipeline_nbytes
from overture.testing import tiny_checkpoint

from harness import Server

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
    """What the server holds, least recently used first, after loading ``hub_id`` if given."""
    return client.run("tests/weights", input={"hub_id": hub_id})


def test_loading_past_the_budget_evicts_the_least_recently_used(client: replicate.Client) -> None:
    def stable_audio_clip() -> None:
        client.run("stackadoc/stable-audio-open-1.0", input={"prompt": "pads", "seconds_total": 1, "steps": 1})

    def riffusion_clip() -> None:
        client.run("riffusion/riffusion", input={"num_inference_steps": 2, "denoising": 0.5})

    stable_audio_clip()
    assert loaded(client) == [STABLE_AUDIO]
    riffusion_clip()
    assert loaded(client) == [STABLE_AUDIO, RIFFUSION]
    stable_audio_clip()  # used again: riffusion is now the least recently used
    assert loaded(client) == [RIFFUSION, STABLE_AUDIO]
    assert loaded(client, WEIGHTS) == [STABLE_AUDIO, WEIGHTS]
    # Loaded again, riffusion makes room: Stable Audio alone would not free enough, so both go.
    riffusion_clip()
    assert loaded(client) == [RIFFUSION]
