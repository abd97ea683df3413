"""Server-sent events as the real client reads them."""

from __future__ import annotations

import httpx
import pytest
import replicate

from harness import Server

pytestmark = pytest.mark.timeout(60)


def _raw_events(server: Server, url: str, headers: dict[str, str] | None = None) -> tuple[httpx.Response, list[dict]]:
    """Parse the stream by hand, failing on anything the client would choke on."""
    events: list[dict] = []
    block: dict = {}
    with server.http() as http, http.stream("GET", url, headers=headers or {}) as response:
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if block:
                    assert "event" in block and "id" in block, block
                    assert block["event"] in ("output", "logs", "error", "done")
                    events.append(block)
                    block = {}
                continue
            name, _, value = line.partition(": ")
            if name == "data":
                block["data"] = block.get("data", []) + [value]
            else:
                block[name] = value
    return response, events


def test_replicate_stream_yields_each_section_then_done(client: replicate.Client) -> None:
    events = list(client.stream("overture/synth", input={"prompt": "techno 128 bpm", "duration": 20}))
    outputs = [e for e in events if e.event.value == "output"]
    assert len(outputs) >= 2 and all(str(e).endswith(".wav") for e in outputs)
    assert [str(e) for e in outputs] == sorted(str(e) for e in outputs)  # section-001, 002, ...
    assert events[-1].event.value == "done" and events[-1].data == "{}"
    assert any(e.event.value == "logs" and "Using seed" in e.data for e in events)


def test_prediction_stream_shows_logs_live(client: replicate.Client) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 10, "step_seconds": 0.1})
    logs = [e.data for e in prediction.stream() if e.event.value == "logs"]
    assert any("%|" in line for line in logs) and "finished 10 steps" in "".join(logs)


def test_a_late_subscriber_gets_the_whole_stream(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 3})
    prediction.wait()
    response, events = _raw_events(server, prediction.urls["stream"])
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [e["event"] for e in events][-1] == "done"
    assert "finished 3 steps" in "\n".join(line for e in events if e["event"] == "logs" for line in e["data"])


def test_last_event_id_resumes_after_that_event(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 3, "step_seconds": 0.3})
    prediction.wait()
    _, everything = _raw_events(server, prediction.urls["stream"])
    assert len(everything) >= 3
    _, rest = _raw_events(server, prediction.urls["stream"], {"Last-Event-ID": everything[0]["id"]})
    assert rest == everything[1:]


def test_a_failed_prediction_streams_error_then_done(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 1, "fail": True})
    with pytest.raises(RuntimeError, match="the model was asked to fail"):
        list(prediction.stream())
    _, events = _raw_events(server, prediction.urls["stream"])
    assert [e["event"] for e in events][-2:] == ["error", "done"]
    assert events[-1]["data"] == ['{"reason":"error"}']


def test_a_canceled_prediction_ends_its_stream(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 500, "step_seconds": 0.05})
    prediction.cancel()
    _, events = _raw_events(server, prediction.urls["stream"])
    assert events[-1]["event"] == "done" and events[-1]["data"] == ['{"reason":"canceled"}']


def test_unknown_prediction_stream_is_404(server: Server) -> None:
    with server.http() as http:
        assert http.get("/v1/predictions/nope/stream").status_code == 404


def test_a_quiet_stream_gets_keepalive_comments(client: replicate.Client, server: Server) -> None:
    prediction = client.predictions.create(model="tests/steps", input={"steps": 1, "step_seconds": 11})
    comments = []
    with server.http() as http, http.stream("GET", prediction.urls["stream"]) as response:
        for line in response.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            if line == "event: done":
                break
    assert comments  # sent every 10 s, well inside the client's 30 s read timeout
