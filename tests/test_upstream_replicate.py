"""B in front of api.replicate.com: it accepts what Replicate really sends (the shapes in
``tests/fixtures/replicate/``, from the ``replicate`` client's recorded exchanges), served by a
stand-in on loopback since Replicate itself cannot be reached from here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import TOKEN, UNLIMITED, Server, query
from replicate_stand_in import OUTPUT_BYTES, StandIn

pytestmark = pytest.mark.timeout(120)

UPSTREAM_TOKEN = "r8_upstream_token_for_the_stand_in"


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


def relaying(data_dir: Path, stand_in: StandIn, *extra: str) -> Server:
    return Server(
        data_dir,
        "--upstream",
        f"replicate={stand_in.url}",
        "--upstream-token",
        f"replicate={UPSTREAM_TOKEN}",
        "--route",
        "overture/synth=upstream:replicate",
        *UNLIMITED,
        *extra,
    )


@pytest.fixture
def relay(tmp_path: Path, stand_in: StandIn) -> Iterator[Server]:
    server = relaying(tmp_path, stand_in).start()
    yield server
    server.stop()


def test_b_accepts_what_api_replicate_com_really_sends(relay: Server, stand_in: StandIn) -> None:
    output = relay.client().run("overture/synth", input={"prompt": "lofi", "duration": 1, "seed": 7})
    # Outputs as a list, each file brought home from the delivery host.
    assert isinstance(output, list) and len(output) == 2
    with relay.http() as http:
        assert all(url.startswith(f"{relay.base_url}/v1/outputs/") for url in output)
        assert [http.get(url).content for url in output] == [OUTPUT_BYTES, OUTPUT_BYTES]
        (prediction,) = http.get("/v1/predictions").json()["results"]
    # The client sees B's own model and version, not "hidden" nor Replicate's internal model.
    assert prediction["model"] == "overture/synth" and prediction["version"] != "hidden"
    assert prediction["provider"] == "replicate" and prediction["metrics"]["predict_time"] == 3.804328
    assert "Using seed: 42069" in prediction["logs"] and prediction["logs"].count("%|") == 1
    # Replicate's record is kept as metadata: its temporary URLs, its stream on another host.
    (raw,) = query(relay.database_url, f"SELECT upstream FROM predictions WHERE id = '{prediction['id']}'")[0]
    record = json.loads(raw) if isinstance(raw, str) else raw
    assert record["version"] == "hidden" and record["urls"]["stream"].startswith("http://localhost:")
    assert record["output"][0].startswith(stand_in.delivery_url)
    # The token goes to the API only, never to the delivery host.
    assert all(seen.headers.get("Authorization") == f"Bearer {UPSTREAM_TOKEN}" for seen in stand_in.requests)
    assert stand_in.deliveries and not any("Authorization" in seen.headers for seen in stand_in.deliveries)
    (create,) = [seen for seen in stand_in.requests if seen.method == "POST"]
    assert create.path == "/v1/models/overture/synth/predictions" and create.headers["Prefer"].startswith("wait")
    assert create.body["input"] == {"prompt": "lofi", "duration": 1, "seed": 7}
    assert f"/v1/upstreams/replicate/predictions/{prediction['id']}/webhook" in create.body["webhook"]


def test_an_output_replicate_already_removed_fails_the_prediction_saying_so(relay: Server, stand_in: StandIn) -> None:
    stand_in.outcome = "removed"
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    assert prediction.status == "failed" and "removed the output before it could be fetched" in prediction.error


def test_a_create_answered_with_500_is_sent_again(relay: Server, stand_in: StandIn) -> None:
    stand_in.fail_creates = 2
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    assert prediction.status == "succeeded" and len(stand_in.created) == 1


def test_an_upstream_that_keeps_answering_500_fails_the_prediction(tmp_path: Path, stand_in: StandIn) -> None:
    stand_in.fail_creates = 1_000_000
    server = relaying(tmp_path, stand_in, "--upstream-timeout", "1").start()
    try:
        prediction = server.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
        prediction.wait()
        assert prediction.status == "failed"
        assert "upstream 'replicate'" in prediction.error and "HTTP 500" in prediction.error
    finally:
        server.stop()


def test_a_throttled_create_honours_retry_after(relay: Server, stand_in: StandIn) -> None:
    stand_in.throttle_creates = 1
    started = time.monotonic()
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    creates = [seen for seen in stand_in.requests if seen.method == "POST"]
    assert prediction.status == "succeeded" and len(creates) == 2 and time.monotonic() - started >= 1.0


def test_the_upstream_token_never_reaches_the_log(relay: Server) -> None:
    relay.client().run("overture/synth", input={"prompt": "x", "duration": 1})
    assert UPSTREAM_TOKEN not in relay.log_path.read_text() and TOKEN not in relay.log_path.read_text()
