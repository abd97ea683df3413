"""Overture in front of another Overture: B relays to A, its upstream, and the real client
against B sees one API (docs/providers.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import replicate

from harness import OTHER_TOKEN, TOKEN, UNLIMITED, Receiver, Server, free_port, query, wait_finished
from overture.engine.upstream_models import UpstreamCatalog
from overture.models.registry import Registry
from overture.upstreams import Route, parse_upstream
from upstream_helpers import relaying

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    modules = ("--model-module", "overture_test_models", "--model-module", "overture_upstream_only")
    server = Server(tmp_path_factory.mktemp("a"), *UNLIMITED, *modules).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, upstream: Server) -> Iterator[Server]:
    server = relaying(
        tmp_path_factory.mktemp("b"),
        upstream.base_url,
        "overture/synth=upstream:a",
        "tests/steps=upstream:a",
        "upstream-only/shout=upstream:a",
    ).start()
    yield server
    server.stop()


def upstream_count(upstream: Server) -> int:
    """How many predictions A has, every page of its list counted."""
    count, page = 0, "/v1/predictions"
    with upstream.http() as http:
        while page:
            body = http.get(page).json()
            count, page = count + len(body["results"]), body["next"]
    return count


def upstream_record(relay: Server, pid: str) -> dict:
    """What B keeps of A's prediction, as metadata."""
    (value,) = query(relay.database_url, f"SELECT upstream FROM predictions WHERE id = '{pid}'")[0]
    return json.loads(value) if isinstance(value, str) else value


def test_run_through_the_relay_returns_its_own_output_urls(relay: Server, upstream: Server) -> None:
    output = relay.client().run("overture/synth", input={"prompt": "techno", "duration": 1, "seed": 11})
    assert str(output).startswith(f"{relay.base_url}/v1/outputs/")
    with relay.http() as http:
        assert http.get(output).content[:4] == b"RIFF"
        (ours,) = [p for p in http.get("/v1/predictions").json()["results"] if p["input"]["seed"] == 11]
    assert ours["provider"] == "a" and ours["status"] == "succeeded"
    theirs = upstream_record(relay, ours["id"])
    with upstream.http() as http:
        at_a = http.get(f"/v1/predictions/{theirs['id']}").json()
    # The upstream's own time and its (temporary) output URL are kept; the client never sees the latter.
    assert ours["metrics"]["predict_time"] == at_a["metrics"]["predict_time"]
    assert theirs["output"] == at_a["output"] and theirs["output"] != str(output)
    assert f"/v1/upstreams/a/predictions/{ours['id']}/webhook" in at_a["webhook"]


def wait_for_webhooks(http: httpx.Client, pid: str) -> dict:
    """A's prediction once its webhook (completed) is no longer pending."""
    deadline = time.monotonic() + 10
    while True:
        body = http.get(f"/v1/predictions/{pid}").json()
        if body["webhook_delivery"]["pending"] == 0 or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_async_polling_sees_the_upstreams_status_and_logs(relay: Server, upstream: Server) -> None:
    client = relay.client()
    prediction = client.predictions.create(model="tests/steps", input={"steps": 20, "step_seconds": 0.1})
    seen = set()
    while prediction.status not in ("succeeded", "failed", "canceled"):
        seen.add(prediction.status)
        time.sleep(0.05)
        prediction.reload()
    assert "processing" in seen
    assert prediction.status == "succeeded" and prediction.output == "done:None"
    assert "Relayed to a as prediction" in prediction.logs and "finished 20 steps" in prediction.logs
    # A's progress bar stays one line here too.
    assert prediction.logs.count("%|") == 1 and prediction.progress is not None
    # A's webhooks reached B, signed with A's secret, and were taken (a 401 would show as failed).
    with upstream.http() as http:
        at_a = wait_for_webhooks(http, upstream_record(relay, prediction.id)["id"])
    assert at_a["webhook_delivery"]["delivered"] == 1 and at_a["webhook_delivery"]["failed"] == 0


def test_cancel_is_passed_on(relay: Server, upstream: Server) -> None:
    client = relay.client()
    prediction = client.predictions.create(model="tests/steps", input={"steps": 200, "step_seconds": 0.1})
    while prediction.status != "processing":
        time.sleep(0.05)
        prediction.reload()
    prediction.cancel()
    prediction.wait()
    assert prediction.status == "canceled"
    theirs = upstream_record(relay, prediction.id)
    with upstream.http() as http:
        assert wait_finished(http, theirs["id"])["status"] == "canceled"


def test_stream_and_webhook_work_as_for_a_local_prediction(relay: Server, receiver: Receiver) -> None:
    client = relay.client()
    events = list(client.stream("overture/synth", input={"prompt": "jazz", "duration": 1, "seed": 3}))
    assert events[-1].event.value == "done"
    outputs = [str(e) for e in events if e.event.value == "output"]
    assert outputs and all(url.startswith(f"{relay.base_url}/v1/outputs/") for url in outputs)

    prediction = client.predictions.create(
        model="tests/steps", input={"steps": 2}, webhook=f"{receiver.url}/hook", webhook_events_filter=["completed"]
    )
    receiver.wait_for(lambda: receiver.delivered())
    body = json.loads(str(receiver.delivered()[0]["body"]))
    assert body["id"] == prediction.id and body["status"] == "succeeded" and body["provider"] == "a"


def test_outputs_stay_after_the_upstream_and_its_data_are_gone(tmp_path: Path) -> None:
    upstream = Server(tmp_path / "a", *UNLIMITED).start()
    server = relaying(tmp_path / "b", upstream.base_url, "overture/synth=upstream:a").start()
    try:
        output = server.client().run("overture/synth", input={"prompt": "rock", "duration": 1})
        upstream.stop()
        shutil.rmtree(upstream.data_dir)
        with server.http() as http:
            (prediction,) = http.get("/v1/predictions").json()["results"]
            assert http.get(str(output)).content[:4] == b"RIFF"
        # The signed URL works without a token, as for a local output.
        assert httpx.get(prediction["signed_output"]).content[:4] == b"RIFF"
    finally:
        server.stop()
        upstream.stop()


def test_the_result_cache_covers_upstream_runs(relay: Server, upstream: Server) -> None:
    client = relay.client()
    given = {"prompt": "cached upstream", "duration": 1, "seed": 42}
    first = client.predictions.create(model="overture/synth", input=given)
    first.wait()
    before = upstream_count(upstream)
    second = client.predictions.create(model="overture/synth", input=given)
    second.wait()
    assert second.status == "succeeded" and "Served from the result cache" in second.logs
    assert upstream_count(upstream) == before  # not paid for twice
    with relay.http() as http:
        assert http.get(second.output).content == http.get(first.output).content
        # Nothing ran for the second, upstream or here.
        providers = [http.get(f"/v1/predictions/{p.id}").json()["provider"] for p in (first, second)]
    assert providers == ["a", "local"]


def test_a_model_without_a_route_runs_here(relay: Server) -> None:
    prediction = relay.client().predictions.create(model="tests/batched", input={"text": "x", "delay": 0})
    prediction.wait()
    with relay.http() as http:
        assert http.get(f"/v1/predictions/{prediction.id}").json()["provider"] == "local"


@pytest.mark.parametrize("size", [1000, 2 * 1024 * 1024], ids=["inline-data-uri", "uploaded-to-files"])
def test_file_inputs_reach_the_upstream(tmp_path: Path, upstream: Server, size: int) -> None:
    server = relaying(tmp_path / "b", upstream.base_url, "tests/file-echo=upstream:a").start()
    try:
        data = bytes(range(256)) * (size // 256)
        (tmp_path / "input.bin").write_bytes(data)
        with open(tmp_path / "input.bin", "rb") as handle:
            output = server.client().run("tests/file-echo", input={"audio": handle})
        assert output["sha256"] == hashlib.sha256(data).hexdigest()
        assert output["file"].startswith(f"{server.base_url}/v1/outputs/")  # the copy A made came home
        with server.http() as http:
            assert http.get(output["file"]).content == data
    finally:
        server.stop()


def test_a_repeated_create_with_the_same_idempotency_key_gets_the_first(upstream: Server) -> None:
    with upstream.http() as http:
        body = {"input": {"steps": 1}}
        first = http.post("/v1/models/tests/steps/predictions", json=body, headers={"Idempotency-Key": "k-1"})
        again = http.post("/v1/models/tests/steps/predictions", json=body, headers={"Idempotency-Key": "k-1"})
        other = http.post("/v1/models/tests/steps/predictions", json=body, headers={"Idempotency-Key": "k-2"})
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    with upstream.http(token=OTHER_TOKEN) as http:
        theirs = http.post("/v1/models/tests/steps/predictions", json=body, headers={"Idempotency-Key": "k-1"})
    assert theirs.json()["id"] != first.json()["id"]  # one owner's keys never find another's


def test_a_webhook_not_signed_by_the_upstream_is_refused(relay: Server) -> None:
    with httpx.Client(base_url=relay.base_url) as http:
        forged = http.post(
            "/v1/upstreams/a/predictions/anything/webhook",
            content=b'{"id": "x", "status": "succeeded"}',
            headers={"webhook-id": "m", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"},
        )
        unknown = http.post("/v1/upstreams/nobody/predictions/anything/webhook", content=b"{}")
    assert forged.status_code == 401 and unknown.status_code == 404


def test_a_model_only_the_upstream_has_is_listed_validated_and_relayed(relay: Server, upstream: Server) -> None:
    with relay.http() as http, upstream.http() as at_a:
        listed = [m["url"].rsplit("/", 2)[-2:] for m in http.get("/v1/models").json()["results"]]
        ours = http.get("/v1/models/upstream-only/shout").json()
        theirs = at_a.get("/v1/models/upstream-only/shout").json()
        refused = http.post("/v1/models/upstream-only/shout/predictions", json={"input": {"times": 9}})
    assert ["upstream-only", "shout"] in listed
    assert ours["latest_version"] == theirs["latest_version"]  # its schema is the upstream's own
    # Checked here against that schema: a 422 naming each field, no upstream call.
    assert refused.status_code == 422
    assert {e["field"] for e in refused.json()["invalid_fields"]} >= {"text", "times"}
    output = relay.client().run("upstream-only/shout", input={"text": "hey", "times": 2, "mood": "cross"})
    assert output == "HEY HEY!!!"


def test_a_model_only_the_upstream_has_outlives_the_upstream_across_a_restart(tmp_path: Path, upstream: Server) -> None:
    server = relaying(tmp_path / "b", upstream.base_url, "upstream-only/shout=upstream:a").start()
    server.stop()
    elsewhere = relaying(tmp_path / "b", upstream.base_url, "upstream-only/shout=upstream:a")
    elsewhere.extra[elsewhere.extra.index("--upstream") + 1] = f"a=http://127.0.0.1:{free_port()}"  # down now
    elsewhere.start()
    try:
        with elsewhere.http() as http:
            assert http.get("/v1/models/upstream-only/shout").status_code == 200  # from the copy kept
    finally:
        elsewhere.stop()


def test_upstream_usage_adds_up_and_the_budget_refuses_with_402(tmp_path: Path, upstream: Server) -> None:
    """B prices A's time at 1 USD a second and caps each token at 1 mUSD a month: the first upstream
    prediction is admitted (nothing spent yet), its own predict_time is what /v1/usage counts, and
    the next is refused with a 402 problem, while a model that runs here still runs."""
    prices = tmp_path / "prices.toml"
    prices.write_text("[providers]\na = 1.0\n")
    extra = ("--prices", str(prices), "--upstream-budget", "0.001")
    relay = relaying(tmp_path / "b", upstream.base_url, "overture/synth=upstream:a", extra=extra).start()
    try:
        client = relay.client()
        first = client.predictions.create(model="overture/synth", input={"prompt": "dub", "duration": 1, "seed": 3})
        first.wait()
        assert first.status == "succeeded"
        with relay.http() as http:
            report = http.get("/v1/usage", params={"group_by": "model,provider"}).json()
            (line,) = report["results"]
            assert (line["model"], line["provider"], line["predictions"]) == ("overture/synth", "a", 1)
            assert line["predict_time"] == pytest.approx(first.metrics["predict_time"], abs=1e-3)
            assert line["cost"] == pytest.approx(first.metrics["predict_time"], abs=1e-3)
            assert report["budget"]["spent"] >= 0.001
            refused = http.post("/v1/models/overture/synth/predictions", json={"input": {"prompt": "dub"}})
            assert refused.status_code == 402, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert "budget" in refused.json()["detail"].lower()
            # Only upstream predictions are capped: a model without a route still runs here.
            here = http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": 1}})
            assert wait_finished(http, here.json()["id"])["provider"] == "local"
        with pytest.raises(replicate.exceptions.ReplicateError) as refusal:
            client.run("overture/synth", input={"prompt": "dub", "duration": 1})
        assert refusal.value.status == 402
    finally:
        relay.stop()
    with upstream.http() as http:
        ran_at_a = [p for p in http.get("/v1/predictions").json()["results"] if p["input"].get("prompt") == "dub"]
    assert len(ran_at_a) == 1


def test_the_version_asked_for_is_the_version_run_upstream(tmp_path: Path) -> None:
    """Routed upstream at model level, a prediction of an older version runs that version on A
    (an Overture upstream has the same version ids), and its result is that version's in the cache."""
    modules = ("--model-module", "overture_test_models", "--model-module", "overture_two_versions")
    upstream = Server(tmp_path / "a", *UNLIMITED, *modules).start()
    server = relaying(tmp_path / "b", upstream.base_url, "tests/two-versions=upstream:a", extra=modules).start()
    try:
        client = server.client()
        older = client.predictions.create(version="tests-two-versions-v1", input={"seed": 1})
        older.wait()
        assert older.output == "first:1"
        assert upstream_record(server, older.id)["version"] == "tests-two-versions-v1"
        latest = client.predictions.create(model="tests/two-versions", input={"seed": 1})
        latest.wait()
        assert latest.output == "second:1" and "Served from the result cache" not in latest.logs
    finally:
        server.stop()
        upstream.stop()


def test_upstream_models_are_fetched_again_and_kept_while_the_upstream_is_down(
    tmp_path: Path, upstream: Server
) -> None:
    """The catalog B keeps of models only A has: fetched again when A can answer (a model A could
    not describe at start-up is served from then on), left as it was when A cannot."""
    upstreams = {"a": parse_upstream("a", f"http://127.0.0.1:{free_port()}", TOKEN)}  # down for now
    catalog = UpstreamCatalog(upstreams, {"upstream-only/shout": Route("upstream", "a")}, tmp_path)
    registry = Registry([])
    catalog.declare(registry)
    assert "upstream-only/shout" not in registry.models
    upstreams["a"] = parse_upstream("a", upstream.base_url, TOKEN)  # up
    catalog.refresh(registry)
    assert registry.version("upstream-only/shout")[1].id == "shout-v1"
    upstreams["a"] = parse_upstream("a", f"http://127.0.0.1:{free_port()}", TOKEN)  # down again
    catalog.refresh(registry)
    assert registry.version("shout-v1")[0].ref == "upstream-only/shout"
