"""Every kind of bad request gets its 4xx with a problem object that names what is wrong."""

from __future__ import annotations

import httpx
import pytest

from harness import Server
from overture.models.synth import SYNTH_VERSION

pytestmark = pytest.mark.timeout(60)


def _problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"]
    return body["detail"]


def _create(http: httpx.Client, input: object) -> httpx.Response:
    return http.post("/v1/models/overture/synth/predictions", json={"input": input})


@pytest.mark.parametrize(
    ("input", "field", "words"),
    [
        ({"duration": "long"}, "duration", "must be a number"),
        ({"duration": 601}, "duration", "less than or equal to 600"),
        ({"duration": 0}, "duration", "greater than or equal to 0.5"),
        ({"seed": 1.5}, "seed", "must be an integer"),
        ({"seed": True}, "seed", "must be an integer"),
        ({"prompt": 12}, "prompt", "must be a string"),
        ({"output_format": "flac"}, "output_format", "'flac' is not one of the allowed values: 'wav', 'mp3'"),
        ({"normalization_strategy": "loud"}, "normalization_strategy", "allowed values"),
    ],
)
def test_invalid_input_names_the_field(http: httpx.Client, input: dict, field: str, words: str) -> None:
    detail = _problem(_create(http, input), 422)
    assert f"input.{field}:" in detail and words in detail


def test_every_bad_field_is_reported_at_once(http: httpx.Client) -> None:
    response = _create(http, {"duration": -1, "output_format": "ogg"})
    detail = _problem(response, 422)
    assert "input.duration" in detail and "input.output_format" in detail
    assert {f["field"] for f in response.json()["invalid_fields"]} == {"duration", "output_format"}


def test_missing_required_field(http: httpx.Client) -> None:
    detail = _problem(http.post("/v1/models/tests/file-echo/predictions", json={"input": {}}), 422)
    assert "input.audio: field required" in detail


def test_file_field_rejects_a_plain_path(http: httpx.Client) -> None:
    detail = _problem(http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": "melody.wav"}}), 422)
    assert "input.audio" in detail and "URL" in detail


def test_file_field_naming_an_unknown_upload(http: httpx.Client, server: Server) -> None:
    url = f"{server.base_url}/v1/files/doesnotexist"
    detail = _problem(http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": url}}), 422)
    assert "input.audio: file doesnotexist does not exist" in detail


def test_unreachable_file_url_fails_the_prediction_readably(http: httpx.Client, server: Server) -> None:
    created = http.post(
        "/v1/models/tests/file-echo/predictions",
        json={"input": {"audio": f"{server.base_url}/no/such/file.wav"}},
        headers={"Prefer": "wait=10"},
    ).json()
    assert created["status"] == "failed"
    assert created["error"].startswith("input.audio: could not download") and "HTTP 4" in created["error"]


def test_unknown_model_and_version(http: httpx.Client) -> None:
    assert "nobody/nothing" in _problem(http.post("/v1/models/nobody/nothing/predictions", json={}), 404)
    assert "abc" in _problem(http.post("/v1/predictions", json={"version": "abc", "input": {}}), 404)
    assert "does not exist" in _problem(http.get("/v1/models/overture/synth/versions/abc"), 404)
    # A real version id of another model is still unknown under this model's name.
    assert _problem(http.get("/v1/models/tests/steps/versions/" + SYNTH_VERSION), 404)


def test_unknown_ids(http: httpx.Client) -> None:
    assert _problem(http.get("/v1/predictions/nope"), 404)
    assert _problem(http.post("/v1/predictions/nope/cancel"), 404)
    assert _problem(http.get("/v1/files/nope"), 404)
    assert _problem(http.delete("/v1/files/nope"), 404)
    assert _problem(http.get("/v1/outputs/nope/out.wav"), 404)
    assert _problem(http.get("/v1/outputs/nope/..%2F..%2Foverture.db"), 404)


def test_malformed_json_and_wrong_body_types(http: httpx.Client) -> None:
    raw = http.post("/v1/predictions", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in _problem(raw, 422)
    assert "version" in _problem(http.post("/v1/predictions", json={"input": {}}), 422)
    assert "input" in _problem(http.post("/v1/predictions", json={"version": SYNTH_VERSION, "input": [1]}), 422)
    assert _problem(http.post("/v1/predictions", json=[1, 2]), 422)
    events = http.post("/v1/models/overture/synth/predictions", json={"webhook_events_filter": ["everything"]})
    assert "webhook_events_filter" in _problem(events, 422)


def test_bad_pagination_cursor(http: httpx.Client) -> None:
    assert "cursor" in _problem(http.get("/v1/predictions", params={"cursor": "!!!"}), 422)


def test_upload_without_content_part(http: httpx.Client) -> None:
    assert "content" in _problem(http.post("/v1/files", files={"other": ("a.txt", b"x")}), 422)


def test_oversized_upload_is_413(tmp_path) -> None:
    srv = Server(tmp_path / "data", "--max-upload-bytes", "1000").start()
    try:
        with srv.http() as http:
            assert "limit" in _problem(http.post("/v1/files", files={"content": ("big.bin", b"x" * 5000)}), 413)
            assert http.post("/v1/files", files={"content": ("ok.bin", b"x" * 900)}).status_code == 201
    finally:
        srv.stop()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer", "r8_test_token_0123456789"])
def test_missing_or_wrong_token_is_401(server: Server, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=server.base_url, headers=headers) as anonymous:
        for method, path in [
            ("GET", "/v1/predictions"),
            ("POST", "/v1/predictions"),
            ("GET", "/v1/models/overture/synth"),
            ("GET", "/v1/files"),
            ("GET", "/v1/webhooks/default/secret"),
            ("GET", "/v1/outputs/x/y.wav"),
        ]:
            assert _problem(anonymous.request(method, path), 401)


def test_token_scheme_is_accepted(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": "Token r8_test_token_0123456789"}) as c:
        assert c.get("/v1/predictions").status_code == 200


def test_health_and_landing_need_no_token(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "READY", "reason": None}
    page = httpx.get(f"{server.base_url}/")
    assert page.status_code == 200 and "overture/synth" in page.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/predictions/"), ("POST", "/v1/predictions/"), ("GET", "/v1/models/"), ("GET", "/v1/files/")],
)
def test_a_trailing_slash_is_a_404_not_a_redirect(http: httpx.Client, method: str, path: str) -> None:
    """The app is built with ``redirect_slashes=False``: a path with a trailing slash names no route,
    and the server answers so instead of redirecting (a redirect would resend the token to a URL
    built from the request's Host header, not from ``--public-url``)."""
    assert http.request(method, path.rstrip("/"), json={}).status_code != 404  # the route without it exists
    response = http.request(method, path, json={})
    assert _problem(response, 404) == "The requested resource does not exist"
    assert "location" not in response.headers


def test_huge_json_body_is_413(http: httpx.Client) -> None:
    body = b'{"input": {"prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}}'
    response = http.post(
        "/v1/models/overture/synth/predictions", content=body, headers={"content-type": "application/json"}
    )
    assert "limit" in _problem(response, 413)


def test_huge_chunked_body_is_413(http: httpx.Client) -> None:
    def chunks():
        yield b'{"input": {"prompt": "'
        for _ in range(40):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    response = http.post(
        "/v1/models/overture/synth/predictions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "limit" in _problem(response, 413)


@pytest.mark.parametrize("value", ["soon", "2s", "inf"])
def test_bad_cancel_after_header(http: httpx.Client, value: str) -> None:
    response = http.post("/v1/models/tests/steps/predictions", json={"input": {}}, headers={"Cancel-After": value})
    assert "Cancel-After" in _problem(response, 422)
