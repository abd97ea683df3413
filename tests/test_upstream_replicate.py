"""B in front of api.replicate.com: it accepts what Replicate really sends (the shapes in
``tests/fixtures/replicate/``, from the ``replicate`` client's recorded exchanges), served by a
stand-in on loopback since Replicate itself cannot be reached from here."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import TOKEN, Server, query, wait_finished
from replicate_stand_in import OUTPUT_BYTES, StandIn
from upstream_helpers import create_a_burst, cut_off_create, relaying

pytestmark = pytest.mark.timeout(120)

UPSTREAM_TOKEN = "r8_upstream_token_for_the_stand_in"


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


def relaying_to(data_dir: Path, stand_in: StandIn, *extra: str) -> Server:
    """B in front of the stand-in, named ``replicate``, with ``overture/synth`` routed there."""
    route = "overture/synth=upstream:replicate"
    return relaying(data_dir, stand_in.url, route, name="replicate", token=UPSTREAM_TOKEN, extra=extra)


def upstream_record(relay: Server, pid: str) -> dict:
    """What B keeps of Replicate's prediction, as metadata."""
    (raw,) = query(relay.database_url, f"SELECT upstream FROM predictions WHERE id = '{pid}'")[0]
    return json.loads(raw) if isinstance(raw, str) else raw


@pytest.fixture
def relay(tmp_path: Path, stand_in: StandIn) -> Iterator[Server]:
    server = relaying_to(tmp_path, stand_in).start()
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
    record = upstream_record(relay, prediction["id"])
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
    server = relaying_to(tmp_path, stand_in, "--upstream-timeout", "1").start()
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


def test_a_prediction_replicate_failed_keeps_its_error(relay: Server, stand_in: StandIn) -> None:
    stand_in.outcome = "failed"
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    assert prediction.status == "failed" and prediction.error == "CUDA out of memory. Tried to allocate 2.00 GiB"
    record = upstream_record(relay, prediction.id)
    assert record["status"] == "failed" and record["error"] == prediction.error and record["output"] is None


@pytest.mark.parametrize("redirected", [False, True], ids=["named", "redirected-to"])
def test_an_output_at_a_refused_address_fails_the_prediction(
    relay: Server, stand_in: StandIn, redirected: bool
) -> None:
    """Outputs are fetched as file inputs are: the cloud metadata address is no output host,
    whether the upstream names it or its delivery host redirects there."""
    metadata = "http://169.254.169.254/latest/meta-data"
    stand_in.outputs = [
        f"{stand_in.delivery_url}/redirect/{urllib.parse.quote(metadata, safe='')}" if redirected else metadata
    ]
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    assert prediction.status == "failed", prediction.output
    assert "link-local address (169.254.169.254)" in prediction.error and "--input-allow-cidr" in prediction.error
    assert ("redirected to" in prediction.error) == redirected


def test_an_output_over_the_size_limit_fails_the_prediction(tmp_path: Path, stand_in: StandIn) -> None:
    server = relaying_to(tmp_path, stand_in, "--max-input-file-bytes", "1000").start()
    try:
        prediction = server.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
        prediction.wait()
        assert prediction.status == "failed" and "larger than the 1000 byte limit" in prediction.error
    finally:
        server.stop()


def synth_version(server: Server) -> str:
    with server.http() as http:
        return str(http.get("/v1/models/overture/synth").json()["latest_version"]["id"])


def test_a_create_cut_off_by_a_crash_is_found_in_replicates_list(tmp_path: Path, stand_in: StandIn) -> None:
    """Replicate has no Idempotency-Key: the marker in the webhook URL, found in its prediction
    list, is all that keeps a restarted B from creating the prediction twice."""
    server = relaying_to(tmp_path, stand_in).start()
    version = synth_version(server)
    server.stop()
    pid = "cutoffreplicatecreate"
    cut_off_create(server, pid, "overture/synth", version, {"prompt": "x", "duration": 1}, "replicate")
    marker = f"{server.base_url}/v1/upstreams/replicate/predictions/{pid}/webhook"
    stand_in.created["r8found"] = stand_in.shape("created", "r8found") | {"webhook": marker}
    try:
        server.start()
        with server.http() as http:
            assert wait_finished(http, pid)["status"] == "succeeded"
        assert not [seen for seen in stand_in.requests if seen.method == "POST"]  # no create at all
        assert list(stand_in.created) == ["r8found"]
    finally:
        server.stop()


def test_a_next_page_on_another_host_is_not_followed(tmp_path: Path, stand_in: StandIn) -> None:
    """The list's ``next`` link would take the token to another host: the search stops there."""
    server = relaying_to(tmp_path, stand_in).start()
    version = synth_version(server)
    server.stop()
    pid = "cutoffwithforeignnext"
    cut_off_create(server, pid, "overture/synth", version, {"prompt": "x", "duration": 1}, "replicate")
    stand_in.list_next = f"{stand_in.stream_url}/v1/predictions?cursor=elsewhere"
    try:
        server.start()
        with server.http() as http:
            ended = wait_finished(http, pid)
        assert ended["status"] == "failed" and "next page on another host" in ended["error"]
        assert not any("cursor" in seen.path for seen in stand_in.requests)
    finally:
        server.stop()


def test_a_cancel_while_replicate_throttles_the_create_ends_it_at_once(relay: Server, stand_in: StandIn) -> None:
    stand_in.throttle_creates = 1_000_000
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    while not any(seen.method == "POST" for seen in stand_in.requests):
        time.sleep(0.02)
    started = time.monotonic()
    prediction.cancel()
    prediction.wait()
    assert prediction.status == "canceled" and time.monotonic() - started < 3
    assert not stand_in.created  # nothing runs there


def test_an_upstream_that_keeps_throttling_fails_the_prediction(tmp_path: Path, stand_in: StandIn) -> None:
    stand_in.throttle_creates = 1_000_000
    server = relaying_to(tmp_path, stand_in, "--upstream-timeout", "2").start()
    try:
        prediction = server.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
        prediction.wait()
        assert prediction.status == "failed" and "kept throttling" in prediction.error
    finally:
        server.stop()


def test_a_burst_prediction_replicate_accepted_never_runs_here_too(tmp_path: Path, stand_in: StandIn) -> None:
    """Answered finished at create (no start ever seen), its output cannot come home: it ran
    upstream, so it fails, instead of running a second time here."""
    stand_in.finish_at_create = True
    stand_in.outputs = ["http://169.254.169.254/out.wav"]
    extra = ("--route", "tests/steps=burst:replicate", "--burst-after", "0.01")
    server = relaying_to(tmp_path, stand_in, *extra).start()
    try:
        bursting = create_a_burst(server.client())
        assert bursting.status == "failed" and "link-local" in bursting.error
        with server.http() as http:
            assert http.get(f"/v1/predictions/{bursting.id}").json()["provider"] == "replicate"
    finally:
        server.stop()


def test_a_secret_that_is_not_one_refuses_webhooks_and_polling_goes_on(relay: Server, stand_in: StandIn) -> None:
    stand_in.secret = "whsec_not base64 at all!"
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    assert prediction.status == "succeeded"
    with relay.http() as http:
        webhook = http.post(
            f"/v1/upstreams/replicate/predictions/{prediction.id}/webhook",
            content=b'{"id": "x", "status": "succeeded"}',
            headers={"webhook-id": "m", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"},
        )
    assert webhook.status_code == 401


def test_replicates_metrics_are_kept_and_strings_that_are_no_file_urls_stay_text(
    relay: Server, stand_in: StandIn
) -> None:
    """Only a string that is one whole URL names a file to bring home; the upstream's other
    metrics reach the client beside this server's times."""
    stand_in.metrics = {"time_to_first_token": 0.25, "output_token_count": 12}
    stand_in.outputs = ["http is how it starts", "https://no host here/x", f"{stand_in.delivery_url}/out.wav"]
    prediction = relay.client().predictions.create(model="overture/synth", input={"prompt": "x", "duration": 1})
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert prediction.output[:2] == ["http is how it starts", "https://no host here/x"]
    assert prediction.output[2].startswith(f"{relay.base_url}/v1/outputs/")
    assert prediction.metrics["time_to_first_token"] == 0.25 and prediction.metrics["output_token_count"] == 12
    assert prediction.metrics["predict_time"] == 3.804328 and "total_time" in prediction.metrics
