"""What a developer's existing Replicate code does, unchanged, against an Overture server."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import replicate
import soundfile as sf
from replicate.exceptions import ModelError, ReplicateError

from harness import OTHER_TOKEN, Server
from overture.models.synth import SYNTH_VERSION

pytestmark = pytest.mark.timeout(120)


def _wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data))
    return audio, rate


def test_run_by_version_returns_the_audio_url(client: replicate.Client, server: Server) -> None:
    output = client.run(
        f"overture/synth:{SYNTH_VERSION}",
        input={"prompt": "Upbeat electronic dance music with synth leads", "duration": 3, "seed": 1},
    )
    # Over plain http the client hands back the URL string (it wraps only https: and data: URLs).
    assert isinstance(output, str) and output.startswith(f"{server.base_url}/v1/outputs/")
    with server.http() as http:
        audio, rate = _wav(http.get(output).raise_for_status().content)
    assert rate == 44100 and audio.shape == (3 * 44100, 2)


def test_run_by_model_name_uses_the_latest_version(client: replicate.Client) -> None:
    output = client.run("overture/synth", input={"prompt": "ambient", "duration": 1, "output_format": "mp3"})
    assert output.endswith(".mp3")


def test_create_then_poll_with_reload_like_the_seed_example(client: replicate.Client) -> None:
    prediction = client.predictions.create(
        model="overture/synth", input={"prompt": "epic orchestral music", "duration": 6}
    )
    assert prediction.status == "starting" and prediction.output is None
    while prediction.status not in ["succeeded", "failed"]:
        prediction.reload()
        time.sleep(0.05)
    assert prediction.status == "succeeded"
    assert (
        prediction.metrics["predict_time"] > 0
        and prediction.metrics["total_time"] >= prediction.metrics["predict_time"]
    )
    assert "Using seed:" in prediction.logs
    assert prediction.progress is not None and prediction.progress.percentage == 1.0


def test_create_by_version_then_wait(client: replicate.Client) -> None:
    prediction = client.predictions.create(version=SYNTH_VERSION, input={"duration": 1})
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.output.endswith(".wav")


def test_version_field_accepts_owner_name_and_owner_name_version(client: replicate.Client) -> None:
    for ref in ("overture/synth", f"overture/synth:{SYNTH_VERSION}"):
        prediction = client.predictions.create(version=ref, input={"duration": 1})
        assert prediction.version == SYNTH_VERSION and prediction.model == "overture/synth"


def test_webhook_is_stored_with_its_filter(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(
        model="overture/synth",
        input={"prompt": "..."},
        webhook="https://your-server.com/webhook",
        webhook_events_filter=["completed"],
    )
    record = server.http().get(f"/v1/predictions/{prediction.id}").json()
    assert record["webhook"] == "https://your-server.com/webhook"
    assert record["webhook_events_filter"] == ["completed"]


def test_cancel_a_running_prediction(client: replicate.Client) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 400, "step_seconds": 0.05})
    while prediction.status == "starting":
        prediction.reload()
    prediction.cancel()
    assert prediction.status == "canceled"
    time.sleep(0.3)
    prediction.reload()
    assert prediction.status == "canceled" and prediction.output is None
    assert prediction.metrics["predict_time"] < 5


def test_cancel_of_a_finished_prediction_returns_it_unchanged(client: replicate.Client) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 1})
    prediction.wait()
    client.predictions.cancel(prediction.id)
    prediction.reload()
    assert prediction.status == "succeeded" and prediction.output == "done:None"


def test_failed_prediction_raises_model_error_from_run(client: replicate.Client) -> None:
    with pytest.raises(ModelError) as err:
        client.run("tests/steps", input={"steps": 1, "fail": True})
    assert "the model was asked to fail" in str(err.value)
    assert err.value.prediction.status == "failed"


def test_run_waits_past_the_sync_window_by_polling(client: replicate.Client, server: Server) -> None:
    # Prefer: wait=1 ends before the model does: the reply says "starting" and run() polls.
    output = client.run("tests/steps", input={"steps": 30, "step_seconds": 0.05, "label": "slow"}, wait=1)
    assert output == "slow:None"


def test_list_walks_every_page(client: replicate.Client, server: Server) -> None:
    created = {client.predictions.create(model="tests/steps", input={"steps": 0}).id for _ in range(12)}
    seen: list[str] = []
    for page in replicate.paginate(client.predictions.list):
        assert len(page.results) <= 5  # the test server's page size
        seen.extend(p.id for p in page.results)
    assert created <= set(seen) and len(seen) == len(set(seen))


def test_models_and_versions(client: replicate.Client) -> None:
    model = client.models.get("overture/synth")
    assert model.latest_version.id == SYNTH_VERSION
    schema = model.latest_version.openapi_schema["components"]["schemas"]
    assert schema["Input"]["properties"]["duration"]["maximum"] == 600
    assert schema["output_format"]["enum"] == ["wav", "mp3"]
    assert [v.id for v in model.versions.list()] == [SYNTH_VERSION]
    assert model.versions.get(SYNTH_VERSION).id == SYNTH_VERSION


def test_file_input_uploaded_from_an_open_file(client: replicate.Client, tmp_path) -> None:
    path = tmp_path / "melody.wav"
    sf.write(path, np.zeros((800, 1)), 8000)
    with open(path, "rb") as f:
        output = client.run("tests/file-echo", input={"audio": f})
    assert output["size"] == path.stat().st_size
    assert output["file"].endswith("/echo.wav")


def test_file_input_as_data_uri(client: replicate.Client) -> None:
    output = client.run("tests/file-echo", input={"audio": io.BytesIO(b"hello")}, file_encoding_strategy="base64")
    assert output["size"] == 5


def test_files_api_round_trip(client: replicate.Client, tmp_path) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(b"abc")
    created = client.files.create(path, metadata={"purpose": "test"})
    assert created.name == "note.txt" and created.size == 3 and created.metadata == {"purpose": "test"}
    assert created.checksums["md5"] == "900150983cd24fb0d6963f7d28e17f72"
    assert client.files.get(created.id).id == created.id
    assert created.id in {f.id for f in client.files.list()}
    assert client.files.delete(created.id)
    with pytest.raises(ReplicateError) as err:
        client.files.get(created.id)
    assert err.value.status == 404


def test_outputs_need_the_token_but_signed_urls_do_not(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(model="overture/synth", input={"duration": 1})
    prediction.wait()
    with server.http(token=None) as anonymous:
        assert anonymous.get(prediction.output).status_code == 401
        record = server.http().get(f"/v1/predictions/{prediction.id}").json()
        signed = record["signed_output"]
        assert anonymous.get(signed).status_code == 200
        tampered = signed.replace("signature=", "signature=0")
        assert anonymous.get(tampered).status_code == 403


def test_each_token_sees_only_its_own_predictions(client: replicate.Client, server: Server) -> None:
    mine = client.predictions.create(model="tests/steps", input={"steps": 0})
    other = server.client(OTHER_TOKEN)
    with pytest.raises(ReplicateError) as err:
        other.predictions.get(mine.id)
    assert err.value.status == 404
    assert mine.id not in {p.id for p in other.predictions.list().results}


def test_webhook_secret_is_standard_base64(client: replicate.Client) -> None:
    secret = client.webhooks.default.secret()
    prefix, key = secret.key.split("_")
    assert prefix == "whsec" and len(key) == 44


def test_same_seeded_input_is_served_from_the_cache(client: replicate.Client, server: Server) -> None:
    first = client.predictions.create(model="overture/synth", input={"prompt": "jazz", "duration": 2, "seed": 7})
    first.wait()
    second = client.predictions.create(model="overture/synth", input={"prompt": "jazz", "duration": 2, "seed": 7})
    second.wait()
    assert second.id != first.id and second.status == "succeeded"
    assert "Served from the result cache" in second.logs and first.id in second.logs
    with server.http() as http:
        assert http.get(first.output).content == http.get(second.output).content


def test_batching_model_gets_queued_jobs_together(client: replicate.Client) -> None:
    predictions = [client.predictions.create(model="tests/batched", input={"text": str(i)}) for i in range(5)]
    for p in predictions:
        p.wait()
    sizes = [p.output["batch_size"] for p in predictions]
    assert [p.output["text"] for p in predictions] == [str(i) for i in range(5)]
    assert max(sizes) > 1 and max(sizes) <= 4


def test_model_setup_failure_fails_the_prediction_readably(client: replicate.Client) -> None:
    prediction = client.predictions.create(model="tests/broken", input={})
    prediction.wait()
    assert prediction.status == "failed"
    assert prediction.error == "Model setup failed: RuntimeError: weights are missing"
