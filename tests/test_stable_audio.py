"""Stable Audio Open under its two names, on a tiny random checkpoint, through the real client.

``stackadoc/stable-audio-open-1.0`` keeps Replicate's schema to the letter;
``stability-ai/stable-audio-open-1.0`` adds the seed document's ``duration`` and MP3 output.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyloudnorm
import pytest
import replicate
import soundfile as sf
import torch

from harness import Server
from overture.models.base import Version
from overture.models.stable_audio import (
    HUB_ID,
    MODELS,
    STABILITY_VERSION,
    STACKADOC_VERSION,
    StabilityStableAudio,
    StackadocStableAudio,
)
from overture.models.stable_audio.request import Request
from overture.models.stable_audio.sampling import SAMPLERS, exponential_sigmas, sample
from overture.testing import tiny_checkpoint

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_thread")]

SR = 44100
FAST = {"steps": 4}

# Replicate's published schema of stackadoc/stable-audio-open-1.0 (cog-stable-audio under Cog 0.16.8).
GOLDEN = Path(__file__).parent / "golden" / "stableaudio.openapi.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("stable-audio", tmp_path_factory.mktemp("stable-audio-tiny"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("data") / "overture-data", "--checkpoint", f"{HUB_ID}={checkpoint}")
    yield srv.start()
    srv.stop()


def fetch_audio(server: Server, url: str) -> tuple[np.ndarray, int]:
    with server.http() as http:
        audio, rate = sf.read(io.BytesIO(http.get(url).raise_for_status().content), always_2d=True)
    return audio, rate


# -- schemas -------------------------------------------------------------------------------------


def golden_schemas() -> dict[str, dict]:
    return json.loads(GOLDEN.read_text())["components"]["schemas"]


def test_stackadoc_version_has_replicates_schema_exactly() -> None:
    schemas = _version(STACKADOC_VERSION, StackadocStableAudio).openapi_schema["components"]["schemas"]
    golden = golden_schemas()
    assert schemas["Input"] == golden["Input"]
    assert schemas["Output"] == golden["Output"]
    # No choices, so no enum components besides Cog's own.
    assert set(schemas) == {"Input", "Output", "Status", "WebhookEvent", "PredictionRequest", "PredictionResponse"}


def test_stability_ai_name_adds_duration_and_output_format() -> None:
    schemas = _version(STABILITY_VERSION, StabilityStableAudio).openapi_schema["components"]["schemas"]
    properties = dict(schemas["Input"]["properties"])
    duration, output_format = properties.pop("duration"), properties.pop("output_format")
    assert {**schemas["Input"], "properties": properties} == golden_schemas()["Input"]
    assert duration["type"] == "integer" and (duration["minimum"], duration["maximum"]) == (1.0, 47.0)
    assert "default" not in duration
    assert output_format["default"] == "wav" and schemas["output_format"]["enum"] == ["wav", "mp3"]


def _version(version_id: str, predictor: type) -> Version:
    version = next(v for m in MODELS for v in m.versions if v.id == version_id)
    assert version.predictor is predictor
    return version


def test_the_two_names_are_served(client: replicate.Client) -> None:
    assert client.models.get("stackadoc/stable-audio-open-1.0").latest_version.id == STACKADOC_VERSION
    assert client.models.get("stability-ai/stable-audio-open-1.0").latest_version.id == STABILITY_VERSION


# -- the seed document's example -----------------------------------------------------------------


def test_seed_example_through_the_module_level_client(server: Server, env: None) -> None:
    output = replicate.run(
        "stability-ai/stable-audio-open-1.0",
        input={"prompt": "Ambient soundscape with ethereal pads", "duration": 30},
    )
    audio, rate = fetch_audio(server, output)
    assert output.endswith("/output.wav")
    assert rate == SR and audio.shape == (30 * SR, 2)
    assert np.abs(audio).max() > 0.9  # peak-normalized


# -- every input ---------------------------------------------------------------------------------


def test_stackadoc_by_version_with_a_batch_joins_clips_end_to_end(client: replicate.Client, server: Server) -> None:
    output = client.run(
        f"stackadoc/stable-audio-open-1.0:{STACKADOC_VERSION}",
        input={"prompt": "warm drum loop", "seconds_total": 2, "batch_size": 3, "seed": 5, **FAST},
    )
    audio, rate = fetch_audio(server, output)
    assert rate == SR and audio.shape == (3 * 2 * SR, 2)


def test_duration_is_an_alias_of_seconds_total(client: replicate.Client, server: Server) -> None:
    model = "stability-ai/stable-audio-open-1.0"
    for given in ({"duration": 3}, {"seconds_total": 3}, {"duration": 3, "seconds_total": 3}):
        audio, _ = fetch_audio(server, client.run(model, input={"prompt": "pads", **given, **FAST}))
        assert audio.shape == (3 * SR, 2), given


def test_duration_and_seconds_total_that_disagree_are_a_422(http: httpx.Client) -> None:
    route = "/v1/models/stability-ai/stable-audio-open-1.0/predictions"
    reply = http.post(route, json={"input": {"prompt": "pads", "duration": 3, "seconds_total": 4}})
    assert reply.status_code == 422
    assert reply.json()["invalid_fields"] == [
        {
            "field": "duration",
            "message": "is another name for seconds_total, and the two disagree (3 and 4): give one of them",
        }
    ]


def test_mp3_under_the_stability_ai_name(client: replicate.Client, server: Server) -> None:
    output = client.run(
        "stability-ai/stable-audio-open-1.0", input={"prompt": "pads", "duration": 2, "output_format": "mp3", **FAST}
    )
    audio, rate = fetch_audio(server, output)
    assert output.endswith("/output.mp3") and rate == SR and audio.shape[1] == 2
    assert abs(audio.shape[0] - 2 * SR) < 0.1 * SR  # MP3 adds encoder padding


@pytest.mark.parametrize("sampler_type", list(SAMPLERS))
def test_each_sampler_type(client: replicate.Client, server: Server, sampler_type: str) -> None:
    output = client.run(
        f"stackadoc/stable-audio-open-1.0:{STACKADOC_VERSION}",
        input={"prompt": "pads", "seconds_total": 1, "sampler_type": sampler_type, "steps": 3},
    )
    assert fetch_audio(server, output)[0].shape == (SR, 2)


# -- what each input does --------------------------------------------------------------------------
# One clip of one second through the server, 16-bit samples compared exactly: an input that reaches
# the model changes them; a value that the sampling math says changes nothing leaves them identical.
# (Identical inputs would come from the result cache, so each "identical" pair differs in its input.)

BASE = {"prompt": "warm pads", "seconds_total": 1, "seed": 7, "steps": 3}


def clip(client: replicate.Client, server: Server, **changes: object) -> np.ndarray:
    output = client.run(f"stackadoc/stable-audio-open-1.0:{STACKADOC_VERSION}", input={**BASE, **changes})
    with server.http() as http:
        samples, rate = sf.read(io.BytesIO(http.get(output).raise_for_status().content), dtype="int16")
    assert rate == SR and samples.shape == (SR, 2)
    return samples


@pytest.mark.parametrize(
    ("changes", "other"),
    [
        ({"seed": 7}, {"seed": 8}),
        ({"prompt": "warm pads"}, {"prompt": "loud drums"}),
        ({"negative_prompt": ""}, {"negative_prompt": "drums"}),  # under the default guidance, 6
        ({"cfg_scale": 6.0}, {"cfg_scale": 1.0}),
        ({"seconds_start": 0}, {"seconds_start": 100}),  # timing conditioning only: same length
        ({"sigma_max": 500}, {"sigma_max": 80}),
        ({"sigma_min": 0.03}, {"sigma_min": 0.3}),
    ],
    ids=lambda changes: ",".join(f"{k}={v}" for k, v in changes.items()),
)
def test_each_input_reaches_the_model(client: replicate.Client, server: Server, changes: dict, other: dict) -> None:
    assert not np.array_equal(clip(client, server, **changes), clip(client, server, **other))


def test_without_guidance_the_negative_prompt_changes_nothing(client: replicate.Client, server: Server) -> None:
    # v = uncond + cfg_scale * (cond - uncond) is cond at cfg_scale 1: the unconditional side, where
    # the negative prompt goes, drops out.
    plain = clip(client, server, cfg_scale=1.0)
    assert np.array_equal(clip(client, server, cfg_scale=1.0, negative_prompt="drums"), plain)


def test_cfg_scale_zero_is_the_unconditional_generation(client: replicate.Client, server: Server) -> None:
    # v = uncond + cfg_scale * (cond - uncond): at 0 only the unconditional side is left, all zeros
    # without a negative prompt, so the prompt no longer matters.
    unconditional = clip(client, server, cfg_scale=0.0)
    assert np.array_equal(clip(client, server, cfg_scale=0.0, prompt="loud drums"), unconditional)
    assert not np.array_equal(clip(client, server, cfg_scale=0.0, negative_prompt="drums"), unconditional)


def test_with_one_step_the_schedule_is_sigma_max_then_zero(client: replicate.Client, server: Server) -> None:
    one_step = clip(client, server, steps=1)
    assert np.array_equal(clip(client, server, steps=1, sigma_min=0.3), one_step)
    assert not np.array_equal(clip(client, server, steps=1, sigma_max=80), one_step)


def test_init_noise_level_has_no_effect_without_init_audio(client: replicate.Client, server: Server) -> None:
    assert np.array_equal(clip(client, server, init_noise_level=0.2), clip(client, server, init_noise_level=1.0))


@pytest.mark.parametrize(
    ("version", "bad", "message"),
    [
        (STACKADOC_VERSION, {"seconds_total": 0}, "must be at least 1 (got 0)"),
        (STACKADOC_VERSION, {"seconds_start": -1}, "must not be negative (got -1)"),
        (STACKADOC_VERSION, {"steps": 0}, "must be at least 1 (got 0)"),
        (STACKADOC_VERSION, {"batch_size": 0}, "must be at least 1 (got 0)"),
        (STACKADOC_VERSION, {"sigma_min": 600}, "must be below sigma_max (got sigma_min 600.0 and sigma_max 500)"),
        (STACKADOC_VERSION, {"sampler_type": "k-dpm-adaptive"}, "'k-dpm-adaptive' is not supported; use one of"),
        (STACKADOC_VERSION, {"seconds_total": 48}, "must be less than or equal to 47"),
        (STABILITY_VERSION, {"duration": 0}, "must be greater than or equal to 1"),
        (STABILITY_VERSION, {"duration": 2, "steps": 0}, "must be at least 1 (got 0)"),
    ],
)
def test_values_generation_cannot_use_are_a_422_naming_the_field(
    http: httpx.Client, version: str, bad: dict, message: str
) -> None:
    reply = http.post("/v1/predictions", json={"version": version, "input": {"prompt": "pads", **bad}})
    assert reply.status_code == 422
    (invalid,) = reply.json()["invalid_fields"]
    assert invalid["field"] == list(bad)[-1] and invalid["message"].startswith(message), invalid


# -- generation ------------------------------------------------------------------------------------


def test_trimmed_latent_agrees_with_the_full_window_on_the_kept_part(checkpoint: Path) -> None:
    from diffusers import StableAudioPipeline

    from overture.models.stable_audio.generate import frames_for, generate, window_frames

    pipe = StableAudioPipeline.from_pretrained(checkpoint)
    request = Request("ambient pads", seconds_total=4, steps=4, seed=3)
    assert frames_for(pipe, 5) == 108 and window_frames(pipe) == 1024  # 5 s of latent against 47.55 s
    trimmed = generate(pipe, request, lambda step: None)[0].numpy()
    full = generate(pipe, request, lambda step: None, frames=window_frames(pipe))[0].numpy()
    assert trimmed.shape == full.shape == (2, 4 * SR)
    meter = pyloudnorm.Meter(SR)
    assert abs(meter.integrated_loudness(trimmed.T) - meter.integrated_loudness(full.T)) < 1.0
    assert np.abs(band_levels_db(trimmed) - band_levels_db(full)).max() < 2.0


def band_levels_db(audio: np.ndarray) -> np.ndarray:
    """Mean power in 12 log-spaced bands from 50 Hz to 20 kHz, in dB."""
    power = np.abs(np.fft.rfft(audio.mean(axis=0))) ** 2
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / SR)
    edges = np.geomspace(50, 20000, 13)
    return np.array([10 * np.log10(power[(freqs >= lo) & (freqs < hi)].mean()) for lo, hi in itertools.pairwise(edges)])


@pytest.mark.parametrize("sampler_type", list(SAMPLERS))
def test_samplers_draw_from_the_distribution_the_denoiser_describes(sampler_type: str) -> None:
    # Data ~ N(0, 0.5²): the ideal denoiser is x * s² / (s² + sigma²); samples should have std 0.5.
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x * 0.25 / (0.25 + sigma**2)

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 4096, generator=generator)
    steps: list[int] = []
    out = sample(sampler_type, denoise, noise, exponential_sigmas(40, 0.03, 500), generator, steps.append)
    assert steps == list(range(1, 41))
    assert abs(float(out.std()) - 0.5) < 0.05, float(out.std())


def test_schedule_is_exponential_from_sigma_max_to_sigma_min_then_zero() -> None:
    sigmas = exponential_sigmas(5, 0.03, 500)
    assert sigmas[0] == pytest.approx(500) and sigmas[4] == pytest.approx(0.03) and sigmas[5] == 0
    ratios = sigmas[1:5] / sigmas[:4]
    assert torch.allclose(ratios, ratios[0].expand(4))
