"""The official JavaScript client (``replicate`` on npm, pinned by tests/js/package-lock.json)
unchanged against a real server, and the server fixes it needed, each checked over plain HTTP too.

Node scripts in tests/js drive the client, several calls each (a node start costs about 0.3 s), and
print what they saw as one JSON object. They configure the client as the README does: the base URL
and token from ``REPLICATE_BASE_URL`` and ``REPLICATE_API_TOKEN``.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from harness import OTHER_TOKEN, TESTS_DIR, TOKEN, Server, npm_installed, wait_finished
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.timeout(300)

JS_DIR = TESTS_DIR / "js"
README = TESTS_DIR.parent / "README.md"


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the client installed from tests/js/package-lock.json."""
    return npm_installed(JS_DIR)


def _env(server: Server, **extra: str) -> dict[str, str]:
    return {**os.environ, "REPLICATE_BASE_URL": server.base_url, "REPLICATE_API_TOKEN": TOKEN, **extra}


def run_node(node: str, server: Server, script: str, **env: str) -> Any:
    """Run a script of tests/js against ``server``; what it reported."""
    done = subprocess.run(
        [node, script], cwd=JS_DIR, env=_env(server, **env), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The synth, the test models, and a tiny MusicGen checkpoint served as ``facebook/musicgen-small``;
    models run in threads (``--workers inline``): these tests are about the API, and a worker process
    per model would cost each a few seconds to start."""
    root = tmp_path_factory.mktemp("js")
    mono = tiny_checkpoint("musicgen", root / "mono")
    args = ["--page-size", "5", "--workers", "inline", "--checkpoint", f"facebook/musicgen-small={mono}"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        srv = Server(root / "data", *args).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """The same over TLS, with the CA that node is told to trust."""
    root = tmp_path_factory.mktemp("js-https")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    args = ["--workers", "inline", "--ssl-certfile", str(root / "cert.pem"), "--ssl-keyfile", str(root / "key.pem")]
    verify = ssl.create_default_context(cafile=root / "ca.pem")
    srv = Server(root / "data", *args, scheme="https", verify=verify).start()
    yield srv, root / "ca.pem"
    srv.stop()


# --- the client's API, from node ------------------------------------------------------------


@pytest.fixture(scope="module")
def predictions(node: str, server: Server) -> Any:
    """What predictions.mjs saw: one node run for the two tests that read it."""
    return run_node(node, server, "predictions.mjs")


def test_predictions_models_and_deployments(predictions: Any, server: Server) -> None:
    seen = predictions
    version = seen["model"]["latest"]
    assert seen["model"] == {"owner": "overture", "name": "synth", "latest": version}
    assert version in seen["versions"] and seen["version"]["id"] == version and "prompt" in seen["version"]["inputs"]

    # run() by owner/name and by owner/name:version; over http the output is the URL, and it opens
    # without the token.
    for output in (seen["byName"]["output"], seen["byVersion"]):
        assert output.startswith(f"{server.base_url}/v1/outputs/") and "signature=" in output
    assert seen["byName"]["file"] == {"status": 200, "type": "audio/x-wav", "head": "RIFF"}
    assert seen["musicgen"]["file"] == {"status": 200, "type": "audio/x-wav", "head": "RIFF"}
    assert urllib.parse.urlsplit(seen["musicgen"]["output"]).path.endswith("/out.wav")

    # Polling, and blocking for a second (Prefer: wait=1) on something that takes longer.
    assert seen["polled"] == "polled:None" and seen["polledStates"][-1] == "succeeded"
    assert seen["blocked"] == "blocked:None"
    assert seen["blockedStates"][0] == "starting" and seen["blockedStates"][-1] == "succeeded"

    assert seen["created"]["status"] == "starting"
    assert (
        seen["waited"] == seen["got"] == {"id": seen["created"]["id"], "status": "succeeded", "output": "created:None"}
    )
    assert seen["createdByVersion"] == {"status": "succeeded", "version": version}
    assert seen["canceled"]["status"] == "canceled"
    assert seen["deployed"] == {"status": "succeeded", "deployment": "overture/synth", "model": "overture/synth"}

    # paginate() follows next through pages of five, newest first, each prediction once.
    assert seen["firstPage"]["count"] == 5 and seen["firstPage"]["next"].startswith(server.base_url)
    pages = seen["pages"]
    listed = [pid for page in pages for pid in page]
    assert len(pages) >= 2 and all(len(page) == 5 for page in pages[:-1]) and len(set(listed)) == len(listed)
    assert listed.index(seen["canceled"]["id"]) < listed.index(seen["created"]["id"])


def test_the_errors_the_client_shows(predictions: Any) -> None:
    errors = predictions["errors"]
    # A 422 names the field (the client shows the body it got); a model's failure is the prediction's error.
    invalid = errors["invalidInput"]
    assert invalid["name"] == "ApiError" and invalid["status"] == 422
    assert "input.duration: must be greater than or equal to 0.5 (got -5)" in invalid["message"]
    assert (
        errors["unknownModel"]["status"] == 404
        and "Model nobody/nothing does not exist" in errors["unknownModel"]["message"]
    )
    assert errors["modelFailure"] == {
        "name": "Error",
        "message": "Prediction failed: the model was asked to fail",
        "status": None,
    }
    assert errors["badToken"]["status"] == 401


def test_stream_and_an_existing_predictions_stream_url(node: str, server: Server) -> None:
    seen = run_node(node, server, "stream.mjs")
    whole = seen["whole"]
    assert [event["event"] for event in whole][-2:] == ["output", "done"]
    assert whole[-1]["data"] == "{}" and urllib.parse.urlsplit(whole[-2]["data"]).path.endswith("/output.wav")
    # Asked for with stream: true, the synth's finished sections come in order before the end.
    outputs = [event["data"] for event in seen["sections"] if event["event"] == "output"]
    assert outputs and outputs == sorted(outputs) and "/section-001.wav?" in outputs[0]
    assert seen["outputFile"] == {"status": 200, "type": "audio/x-wav", "head": "RIFF"}
    # Read after it ended: the whole stream again, its output included though the model streams nothing.
    assert [event["event"] for event in seen["replayed"]] == ["logs", "output", "done"]
    assert seen["replayed"][1]["data"] == "late:None"
    assert seen["contentType"].startswith("text/event-stream")
    assert (seen["tampered"], seen["unsigned"]) == (403, 401)


def test_files(node: str, server: Server) -> None:
    seen = run_node(node, server, "files.mjs")
    uploaded = seen["fromBuffer"]
    assert uploaded["metadata"] == {"purpose": "test", "n": 1} and uploaded["md5"] == seen["expectedMd5"]
    assert uploaded["name"].startswith("buffer_") and uploaded["content_type"] == "application/octet-stream"
    assert seen["fromBlob"]["size"] == 3 and seen["fromBlob"]["content_type"] == "text/plain"
    assert seen["fromBlob"]["metadata"] == {}
    assert seen["got"] and set(seen["ids"]) <= set(seen["listed"])
    assert seen["echoed"] == {"sha256": seen["expectedSha256"], "size": uploaded["size"]}
    assert seen["deleted"] is True and seen["afterDelete"]["status"] == 404


def test_webhook_secret_and_validate_webhook(node: str, server: Server) -> None:
    seen = run_node(node, server, "webhooks.mjs")
    assert seen["secretPrefix"] == "whsec" and seen["deliveredFor"] == seen["prediction"]
    assert seen["validRequest"] is True and seen["validFields"] is True
    assert seen["tamperedBody"] is False and seen["otherSecret"] is False


def test_over_https_outputs_are_file_outputs_that_open_without_the_token(
    node: str, https_server: tuple[Server, Path]
) -> None:
    server, ca = https_server
    seen = run_node(node, server, "file_output.mjs", NODE_EXTRA_CA_CERTS=str(ca))
    assert seen["fileOutput"] is True and seen["url"].startswith(f"{server.base_url}/v1/outputs/")
    assert (seen["head"], seen["type"]) == ("RIFF", "audio/x-wav")
    assert seen["plain"] == "string"
    assert (seen["echoedFile"], seen["echoedSize"]) == ("echo me", 7)


def test_the_readme_example_runs_as_written(node: str, server: Server) -> None:
    example = re.search(r"### From JavaScript.*?```js\n(.*?)```", README.read_text(), re.S)
    assert example is not None
    done = subprocess.run(
        [node, "--input-type=module"],
        input=example.group(1),
        cwd=JS_DIR,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"output {server.base_url}/v1/outputs/")
    assert any(line.startswith("output ") and ".wav" in line for line in lines[1:]) and lines[-1] == "done {}"


# --- the server fixes, over plain HTTP ------------------------------------------------------


def test_an_upload_whose_metadata_is_a_file_part(server: Server) -> None:
    """The JavaScript client sends ``metadata`` as a JSON Blob, so as a second file part."""
    files = [
        ("content", ("take.wav", b"RIFF....", "audio/wav")),
        ("metadata", ("blob", b'{"take": 2}', "application/json")),
    ]
    with server.http() as http:
        created = http.post("/v1/files", files=files)
        assert created.status_code == 201, created.text
        assert created.json()["metadata"] == {"take": 2}
        broken = http.post("/v1/files", files=[files[0], ("metadata", ("blob", b"\xff[", "application/json"))])
    assert broken.status_code == 422 and broken.json()["invalid_fields"][0]["field"] == "metadata"


def test_stream_urls_open_without_the_token_and_only_for_their_prediction(server: Server) -> None:
    with server.http() as http, httpx.Client(timeout=30) as anonymous:
        first, second = (
            http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1}}).json() for _ in range(2)
        )
        wait_finished(http, first["id"])
        signed = anonymous.get(first["urls"]["stream"])
        assert signed.status_code == 200 and "event: done" in signed.text
        # Its signature on another prediction's stream is refused.
        other = urllib.parse.urlsplit(second["urls"]["stream"])._replace(
            query=urllib.parse.urlsplit(first["urls"]["stream"]).query
        )
        assert anonymous.get(urllib.parse.urlunsplit(other)).status_code == 403
        # With a token the token decides, whatever the URL carries: another token sees nothing.
        headers = {"Authorization": f"Bearer {OTHER_TOKEN}"}
        assert anonymous.get(first["urls"]["stream"], headers=headers).status_code == 404


def test_output_urls_are_signed_for_the_javascript_client_only(server: Server) -> None:
    with server.http() as http, httpx.Client(timeout=30) as anonymous:
        created = http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": "data:,abc"}})
        done = wait_finished(http, created.json()["id"])
        # The Python client sends its token to output URLs: it gets them plain.
        assert "?" not in done["output"]["file"] and anonymous.get(done["output"]["file"]).status_code == 401
        javascript = http.get(f"/v1/predictions/{done['id']}", headers={"User-Agent": "replicate-javascript/1.4.0"})
        url = javascript.json()["output"]["file"]
        assert anonymous.get(url).content == b"abc"
        # Signed, it is still one of this token's outputs: another token gets a 404, and it works as an input.
        assert anonymous.get(url, headers={"Authorization": f"Bearer {OTHER_TOKEN}"}).status_code == 404
        again = http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": url}})
        assert wait_finished(http, again.json()["id"])["output"]["size"] == 3
