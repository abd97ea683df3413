"""Riffusion on a tiny random checkpoint, through the real client: Replicate's schema plus ``seed``,
interpolation between two prompts, img2img from each seed spectrogram, and riffusion's output."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import replicate
import soundfile as sf
import torch
from PIL import Image

from harness import Server
from overture.models.riffusion import HUB_ID, MODELS, VERSION
from overture.models.riffusion.riffuse import slerp
from overture.models.riffusion.seed_images import SEED_IMAGE_IDS, load_seed_image
from overture.testing import tiny_checkpoint

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]

SR = 44100
CLIP_SAMPLES = 225351  # 512 frames of 10 ms: 5.11 s
# Few steps keep the tiny model quick: 4 steps at denoising 0.5 run 2 UNet steps.
FAST = {"num_inference_steps": 4, "denoising": 0.5}

# Replicate's published schema of this version (riffusion-hobby's Cog predictor).
GOLDEN = Path(__file__).parent / "golden" / "riffusion.openapi.json"
#: The one seed the operator's directory replaces; the others stay Overture's own.
OPERATORS_SEED = "marim"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("riffusion", tmp_path_factory.mktemp("riffusion-tiny"))


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An operator's directory with a seed of its own, smaller than riffusion's: stripes."""
    directory = tmp_path_factory.mktemp("seed-images")
    stripes = np.where(np.arange(256)[:, None] // 16 % 2 == 0, 40, 230).astype(np.uint8).repeat(256, axis=1)
    Image.fromarray(stripes, mode="L").save(directory / f"{OPERATORS_SEED}.png")
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, seed_images: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("data") / "overture-data",
        "--no-cache",  # a repeated input is generated again, so that its output shows determinism
        "--checkpoint",
        f"{HUB_ID}={checkpoint}",
        "--riffusion-seed-images",
        str(seed_images),
    )
    yield srv.start()
    srv.stop()


def fetch(server: Server, output: dict[str, str]) -> tuple[np.ndarray, int, Image.Image]:
    """The clip (samples, channels), its rate, and the spectrogram image of one prediction."""
    assert set(output) == {"audio", "spectrogram"}
    assert output["audio"].endswith("/gen_sound.wav") and output["spectrogram"].endswith("/spectrogram.jpg")
    with server.http() as http:
        audio, rate = sf.read(io.BytesIO(http.get(output["audio"]).raise_for_status().content), always_2d=True)
        image = Image.open(io.BytesIO(http.get(output["spectrogram"]).raise_for_status().content))
        image.load()
    return audio, rate, image


def assert_riffusion_clip(audio: np.ndarray, rate: int, image: Image.Image) -> None:
    assert rate == SR and audio.shape == (CLIP_SAMPLES, 1)
    assert image.format == "JPEG" and image.size == (512, 512) and image.mode == "RGB"


def run(client: replicate.Client, **inputs: object) -> dict[str, str]:
    return client.run(f"riffusion/riffusion:{VERSION}", input=inputs)


# -- schema ----------------------------------------------------------------------------------------


def test_schema_is_replicates_plus_an_optional_seed() -> None:
    schemas = MODELS[0].versions[0].openapi_schema["components"]["schemas"]
    golden = json.loads(GOLDEN.read_text())["components"]["schemas"]
    properties = dict(schemas["Input"]["properties"])
    seed = properties.pop("seed")
    assert {**schemas["Input"], "properties": properties} == golden["Input"]
    assert schemas["Output"] == golden["Output"]
    assert schemas["seed_image_id"] == golden["seed_image_id"]
    # The addition: optional (no default, not required), after Replicate's inputs.
    assert seed["type"] == "integer" and seed["x-order"] == 6 and "default" not in seed
    assert "required" not in schemas["Input"]
    assert MODELS[0].versions[0].id == "8cf61ea6c56afd61d8f5b9ffd14d7c216c0a93844ce2d82ac1c9ecc9c7f24e05"


# -- the seed document's example -------------------------------------------------------------------


def test_seed_example_through_the_module_level_client(server: Server, env: None) -> None:
    output = replicate.run(
        "riffusion/riffusion:8cf61ea6c56afd61d8f5b9ffd14d7c216c0a93844ce2d82ac1c9ecc9c7f24e05",
        input={"prompt_a": "jazz piano", "prompt_b": "electronic beats", "alpha": 0.5},
    )
    assert_riffusion_clip(*fetch(server, output))


# -- every input -----------------------------------------------------------------------------------


def test_the_seed_image_shapes_the_clip(client: replicate.Client, server: Server) -> None:
    """All else equal, each seed image gives a clip of its own, and the same one gives the same
    clip again (computed again: this server keeps no result cache)."""

    def clip(seed_image_id: str) -> tuple[np.ndarray, np.ndarray]:
        output = run(client, prompt_a="church bells", seed_image_id=seed_image_id, seed=1, **FAST)
        audio, rate, image = fetch(server, output)
        assert_riffusion_clip(audio, rate, image)
        return audio, np.asarray(image)

    clips = {seed_image_id: clip(seed_image_id) for seed_image_id in SEED_IMAGE_IDS}
    for (a, (audio_a, image_a)), (b, (audio_b, image_b)) in itertools.combinations(clips.items(), 2):
        assert not np.array_equal(image_a, image_b) and not np.array_equal(audio_a, audio_b), (a, b)
    again_audio, again_image = clip("vibes")
    assert np.array_equal(again_image, clips["vibes"][1]) and np.array_equal(again_audio, clips["vibes"][0])


def test_alpha_moves_from_prompt_a_to_prompt_b(client: replicate.Client, server: Server) -> None:
    images = {}
    for alpha in (0.0, 0.5, 1.0):
        output = run(client, prompt_a="jazz piano", prompt_b="electronic beats", alpha=alpha, seed=3, **FAST)
        audio, rate, images[alpha] = fetch(server, output)
        assert_riffusion_clip(audio, rate, images[alpha])
    pixels = {alpha: np.asarray(image, dtype=np.float32) for alpha, image in images.items()}
    assert np.abs(pixels[0.0] - pixels[0.5]).mean() > 1 and np.abs(pixels[0.5] - pixels[1.0]).mean() > 1
    # alpha 0 is prompt_a alone: what an empty prompt_b gives (riffusion forces alpha to 0 then).
    alone = run(client, prompt_a="jazz piano", prompt_b="", alpha=0.7, seed=3, **FAST)
    assert np.abs(np.asarray(fetch(server, alone)[2], dtype=np.float32) - pixels[0.0]).mean() < 0.5


def test_denoising_zero_returns_the_seed_the_operator_gave_or_overtures_own(
    client: replicate.Client, server: Server, seed_images: Path
) -> None:
    for seed_image_id, directory in ((OPERATORS_SEED, seed_images), ("og_beat", None)):
        *_, image = fetch(server, run(client, seed_image_id=seed_image_id, denoising=0.0, seed=1))
        seed = np.asarray(load_seed_image(seed_image_id, directory), dtype=np.float32)
        assert seed.shape == (512, 512, 3)  # the operator's 256×256 image, scaled to riffusion's size
        assert np.abs(np.asarray(image, dtype=np.float32) - seed).mean() < 3, seed_image_id  # JPEG's loss only
    own = np.asarray(load_seed_image(OPERATORS_SEED), dtype=np.float32)
    assert np.abs(np.asarray(load_seed_image(OPERATORS_SEED, seed_images), dtype=np.float32) - own).mean() > 30


def test_a_seed_image_directory_that_is_not_one_stops_the_server(tmp_path: Path) -> None:
    config = tmp_path / "overture.toml"
    config.write_text(f'riffusion_seed_images = "{tmp_path / "missing"}"\n')
    for options in (["--riffusion-seed-images", str(tmp_path / "missing")], ["--config", str(config)]):
        serve = [sys.executable, "-m", "overture", "serve", "--data-dir", str(tmp_path / "data"), *options]
        # Wide enough that rich does not wrap a long temporary path inside its error box.
        wide = {**os.environ, "COLUMNS": "1000"}
        result = subprocess.run(serve, capture_output=True, text=True, timeout=60, env=wide)
        assert result.returncode == 2 and f"{tmp_path / 'missing'} is not a directory" in result.stderr, result.stderr


def test_steps_and_strength_set_the_unet_steps(client: replicate.Client) -> None:
    prediction = client.predictions.create(
        version=VERSION, input={"num_inference_steps": 8, "denoising": 0.5, "seed": 2}
    )
    prediction.wait()
    assert prediction.status == "succeeded" and "Using seeds: 2 and 3" in prediction.logs
    # PNDM (riffusion-model-v1's scheduler) repeats its first timestep: 8 steps at 0.5 run the last 5.
    assert prediction.progress is not None and prediction.progress.total == 5


def test_out_of_range_inputs_are_a_422(server: Server) -> None:
    with server.http() as http:
        for bad in ({"alpha": 1.5}, {"denoising": -0.1}, {"num_inference_steps": 0}, {"seed_image_id": "nope"}):
            reply = http.post("/v1/predictions", json={"version": VERSION, "input": bad})
            assert reply.status_code == 422 and next(iter(bad)) in reply.text, bad


# -- the pieces ------------------------------------------------------------------------------------


def test_same_seed_same_clip(checkpoint: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from overture.models.riffusion.riffuse import Riff, riffuse

    pipe = StableDiffusionPipeline.from_pretrained(checkpoint, safety_checker=None, requires_safety_checker=False)
    riff = Riff("jazz piano", "electronic beats", 0.5, 0.5, 4, seed_a=7, seed_b=8)
    first, second = (np.asarray(riffuse(pipe, riff, load_seed_image("vibes"), lambda step: None)) for _ in range(2))
    assert (first == second).all()


def test_slerp_keeps_the_norm_of_gaussian_noise_and_hits_both_ends() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, 64, generator=generator), torch.randn(4, 64, 64, generator=generator)
    assert torch.allclose(slerp(0.0, a, b), a, atol=1e-5) and torch.allclose(slerp(1.0, a, b), b, atol=1e-5)
    # A straight average would shrink the norm by about 1/sqrt(2); the spherical one keeps it.
    assert abs(float(slerp(0.5, a, b).norm() / a.norm()) - 1) < 0.02
    assert torch.allclose(slerp(0.3, a, a), a)  # parallel: plain lerp


def test_seed_images_are_overtures_own_512_square_spectrograms() -> None:
    assert len(SEED_IMAGE_IDS) == 11 and list(SEED_IMAGE_IDS) == sorted(SEED_IMAGE_IDS)
    for image_id in SEED_IMAGE_IDS:
        image = load_seed_image(image_id)
        assert image.size == (512, 512) and image.mode == "RGB"
        # Light images, like riffusion's: mostly quiet, loud parts dark.
        assert 140 < np.asarray(image).mean() < 255, image_id
