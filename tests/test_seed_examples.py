"""The seed document's snippets, unchanged but for the model name (overture/synth until the real
models land), through the module-level ``replicate`` API configured only by environment."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest
import replicate
import trustme

from harness import Server
from overture.models.synth import SYNTH_VERSION

pytestmark = pytest.mark.timeout(120)


def test_sync_run(env: None) -> None:
    output = replicate.run(
        f"overture/synth:{SYNTH_VERSION}",
        input={
            "prompt": "Upbeat electronic dance music with synth leads",
            "model_version": "stereo-large",
            "duration": 30,
        },
    )
    assert output.endswith(".wav")


def test_async_pattern_with_polling(env: None) -> None:
    prediction = replicate.predictions.create(
        model="overture/synth", input={"prompt": "epic orchestral music", "duration": 60}
    )
    while prediction.status not in ["succeeded", "failed"]:
        prediction.reload()
        time.sleep(0.2)
    assert prediction.status == "succeeded"
    audio_url = prediction.output
    assert audio_url.endswith(".wav")


def test_webhook_support(env: None) -> None:
    prediction = replicate.predictions.create(
        model="overture/synth",
        input={"prompt": "..."},
        webhook="https://your-server.com/webhook",
        webhook_events_filter=["completed"],
    )
    assert prediction.status == "starting"


def test_batch_generation(env: None) -> None:
    prompts = ["happy pop song", "dark ambient drone", "energetic rock riff"]
    predictions = []
    for prompt in prompts:
        p = replicate.predictions.create(model="overture/synth", input={"prompt": prompt, "duration": 30})
        predictions.append(p)
    for p in predictions:
        while p.status not in ["succeeded", "failed"]:
            p.reload()
            time.sleep(0.2)
    assert [p.status for p in predictions] == ["succeeded"] * 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_run(server: Server) -> None:
    client = server.client()
    output = await client.async_run("overture/synth", input={"duration": 1})
    assert output.endswith(".wav")


def test_over_https_outputs_are_file_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    srv = Server(
        tmp_path / "data",
        "--ssl-certfile",
        str(tmp_path / "cert.pem"),
        "--ssl-keyfile",
        str(tmp_path / "key.pem"),
        scheme="https",
        verify=ssl.create_default_context(cafile=tmp_path / "ca.pem"),
    ).start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        output = srv.client().run("overture/synth", input={"duration": 2})
        assert isinstance(output, replicate.helpers.FileOutput)
        assert output.url.startswith("https://127.0.0.1:")
        assert output.read()[:4] == b"RIFF"
    finally:
        srv.stop()
