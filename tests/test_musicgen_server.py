"""``meta/musicgen`` through a real server and the real ``replicate`` client: the seed document's
three MusicGen snippets unchanged, failures, checkpoint configuration, and engine batching.

The server maps every hub id the snippets reach to a tiny random checkpoint, as an operator
would map real weights: ``--checkpoint facebook/musicgen-stereo-large=<dir>``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import replicate
import soundfile
from replicate.exceptions import ModelError

from harness import Server
from overture.models.musicgen import OVERTURE_VERSION, REPLICATE_VERSION, write_tiny_stereo_melody_checkpoint
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.timeout(180)

SAMPLE_RATE = 32000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("musicgen")
    mono = tiny_checkpoint("musicgen", root / "mono")
    stereo = tiny_checkpoint("musicgen-stereo", root / "stereo")
    (root / "stereo-melody").mkdir()
    write_tiny_stereo_melody_checkpoint(root / "stereo-melody")
    args = [
        "--checkpoint",
        f"facebook/musicgen-stereo-large={stereo}",
        "--checkpoint",
        f"facebook/musicgen-stereo-melody-large={root / 'stereo-melody'}",
        "--checkpoint",
        f"facebook/musicgen-large={mono}",
        "--checkpoint",
        f"facebook/musicgen-small={mono}",
        "--substitute",
        "facebook/musicgen-medium=facebook/musicgen-small",
        # Batching is checked by running the same seeded input alone and in a batch.
        "--no-cache",
    ]
    # Tiny models gain nothing from a second thread; on a busy 2-core machine it costs plenty.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        srv = Server(root / "data", *args).start()
    yield srv
    srv.stop()


def fetch(server: Server, url: str) -> tuple[np.ndarray, int, str]:
    with server.http() as http:
        data = http.get(url).raise_for_status().content
    info = soundfile.info(io.BytesIO(data))
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, rate, info.subtype


# --- the seed document's snippets -------------------------------------------------------------


def test_sync_run_of_the_stereo_model(env: None, server: Server) -> None:
    output = replicate.run(
        "meta/musicgen:671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb",
        input={
            "prompt": "Upbeat electronic dance music with synth leads",
            "model_version": "stereo-large",
            "duration": 30,
        },
    )
    audio, rate, subtype = fetch(server, output)
    assert output.endswith("/out.wav")
    assert (rate, subtype, audio.shape) == (SAMPLE_RATE, "PCM_16", (30 * SAMPLE_RATE, 2))


def test_async_pattern_with_polling_for_a_minute_of_music(env: None, server: Server) -> None:
    prediction = replicate.predictions.create(
        model="meta/musicgen", input={"prompt": "epic orchestral music", "duration": 60}
    )
    while prediction.status not in ["succeeded", "failed"]:
        prediction.reload()
        time.sleep(0.2)
    assert prediction.status == "succeeded", prediction.error
    audio_url = prediction.output
    audio, rate, _ = fetch(server, audio_url)
    # The latest version, with Replicate's default model_version: the stereo melody model.
    assert prediction.version == OVERTURE_VERSION
    assert (rate, audio.shape) == (SAMPLE_RATE, (60 * SAMPLE_RATE, 2))
    assert "Checkpoint: facebook/musicgen-stereo-melody-large (cpu, float32)" in prediction.logs
    assert "Generating 60 s in windows of 30 s, each 18 s after the last" in prediction.logs
    assert prediction.progress is not None and prediction.progress.percentage == 1.0


def test_melody_alias_with_an_uploaded_melody(
    env: None, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = np.arange(4 * 44100) / 44100
    soundfile.write(tmp_path / "melody.wav", 0.3 * np.sin(2 * np.pi * 392 * t), 44100)
    monkeypatch.chdir(tmp_path)
    output = replicate.run(
        "meta/musicgen:melody",
        input={"prompt": "orchestral arrangement", "input_audio": open("melody.wav", "rb"), "duration": 30},
    )
    audio, rate, _ = fetch(server, output)
    assert (rate, audio.shape) == (SAMPLE_RATE, (30 * SAMPLE_RATE, 2))


# --- failures ---------------------------------------------------------------------------------


def test_an_invalid_request_fails_with_replicates_message(server: Server) -> None:
    with pytest.raises(ModelError) as error:
        server.client().run(f"meta/musicgen:{REPLICATE_VERSION}", input={"duration": 5})
    assert error.value.prediction.status == "failed"
    assert error.value.prediction.error == "Must provide either prompt or input_audio"


def test_multi_band_diffusion_fails_naming_what_is_missing(server: Server) -> None:
    with pytest.raises(ModelError) as error:
        server.client().run(
            "meta/musicgen", input={"prompt": "jazz", "model_version": "large", "multi_band_diffusion": True}
        )
    assert "MultiBandDiffusion" in error.value.prediction.error


def test_a_missing_checkpoint_fails_saying_how_to_provide_it(server: Server) -> None:
    prediction = server.client().predictions.create(
        version=OVERTURE_VERSION, input={"prompt": "jazz", "model_version": "stereo-medium", "duration": 1}
    )
    prediction.wait()
    assert prediction.status == "failed"
    assert "overture serve --checkpoint facebook/musicgen-stereo-medium=/path/to/dir" in prediction.error


def test_an_operator_substitution_is_served_and_logged(server: Server) -> None:
    prediction = server.client().predictions.create(
        version=OVERTURE_VERSION, input={"prompt": "jazz", "model_version": "medium", "duration": 2}
    )
    prediction.wait()
    assert prediction.status == "succeeded"
    assert "Checkpoint: facebook/musicgen-small, serving facebook/musicgen-medium (cpu, float32)" in prediction.logs


def test_cancel_stops_a_running_generation(server: Server) -> None:
    client = server.client()
    prediction = client.predictions.create(
        model="meta/musicgen", input={"prompt": "jazz", "model_version": "large", "duration": 120}
    )
    while prediction.status == "starting" or prediction.progress is None:
        prediction.reload()
        time.sleep(0.05)
    prediction.cancel()
    prediction.wait()
    assert prediction.status == "canceled" and prediction.output is None


# --- engine batching --------------------------------------------------------------------------


def test_predictions_join_a_running_generation_and_get_their_own_audio(server: Server) -> None:
    client = server.client()
    running = client.predictions.create(
        model="meta/musicgen", input={"prompt": "drone", "model_version": "large", "duration": 30}
    )
    while running.status == "starting" or running.progress is None:
        running.reload()
    inputs = [
        {"prompt": prompt, "seed": seed, "model_version": "large", "duration": 3}
        for prompt, seed in [("happy pop song", 1), ("dark ambient drone", 2), ("energetic rock riff", 3)]
    ]
    joined = [client.predictions.create(model="meta/musicgen", input=i) for i in inputs]
    for prediction in joined:
        prediction.wait()
    running.reload()
    # They did not wait for the long one: they joined its batch, and left it before it ended.
    assert running.status == "processing"
    assert all("running generation(s)" in p.logs for p in joined)
    running.wait()
    for prediction, i in zip(joined, inputs, strict=True):
        alone = client.predictions.create(model="meta/musicgen", input=i)
        alone.wait()
        assert "running generation" not in alone.logs
        assert np.array_equal(fetch(server, alone.output)[0], fetch(server, prediction.output)[0])
