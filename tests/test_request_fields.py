"""A bad top-level field of a request (``webhook``, ``stream``, ``version``, a header...) is a 422
that names the field as the client sent it, in ``detail`` and in ``invalid_fields``, and never
as an input: ``input.`` is for the model's inputs only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from overture.models.synth import SYNTH_VERSION


def _invalid(response: httpx.Response) -> tuple[str, list[dict[str, str]]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    return body["detail"], body["invalid_fields"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"webhook": "file:///etc/passwd"}, "webhook", "must be an http(s) URL"),
        ({"webhook_completed": "gopher://example.com/"}, "webhook_completed", "must be an http(s) URL"),
        ({"webhook": "http://[::1"}, "webhook", "must be an http(s) URL"),
        ({"webhook": 12}, "webhook", "string"),
        ({"webhook_events_filter": ["started"]}, "webhook_events_filter.0", "'start'"),
        ({"webhook_events_filter": "completed"}, "webhook_events_filter", "list"),
        ({"stream": "yes please"}, "stream", "boolean"),
        ({"input": "prompt=techno"}, "input", "dictionary"),
    ],
)
def test_a_bad_top_level_field_is_named_as_sent(
    http: httpx.Client, body: dict[str, Any], field: str, words: str
) -> None:
    detail, fields = _invalid(http.post("/v1/models/overture/synth/predictions", json={"input": {}, **body}))
    assert detail.startswith(f"- {field}: ") and words in detail, detail
    assert "input." not in detail
    assert [f["field"] for f in fields] == [field] and words in fields[0]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": {}}, "version"),  # missing
        ({"input": {}, "version": ["not", "a", "string"]}, "version"),
    ],
)
def test_a_bad_version_is_named_as_sent(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    detail, fields = _invalid(http.post("/v1/predictions", json=body))
    assert detail.startswith(f"- {field}: ") and [f["field"] for f in fields] == [field]


def test_a_bad_header_or_query_parameter_is_named_as_sent(http: httpx.Client) -> None:
    response = http.post("/v1/models/overture/synth/predictions", json={"input": {}}, headers={"Cancel-After": "soon"})
    detail, fields = _invalid(response)
    assert detail.startswith("- Cancel-After: ") and [f["field"] for f in fields] == ["Cancel-After"]
    detail, fields = _invalid(http.get("/v1/predictions", params={"cursor": "\u00e9\u00e8"}))
    assert detail.startswith("- cursor: ") and [f["field"] for f in fields] == ["cursor"]


def test_a_bad_upload_field_is_named_as_sent(http: httpx.Client) -> None:
    detail, fields = _invalid(http.post("/v1/files", files={"content": ("a.wav", b"RIFF")}, data={"metadata": "[1]"}))
    assert detail.startswith("- metadata: ") and [f["field"] for f in fields] == ["metadata"]


def test_inputs_keep_their_input_prefix(http: httpx.Client) -> None:
    detail, fields = _invalid(
        http.post("/v1/predictions", json={"version": SYNTH_VERSION, "input": {"duration": "long"}})
    )
    assert detail.startswith("- input.duration: ") and [f["field"] for f in fields] == ["duration"]


def test_one_422_names_a_bad_webhook_and_bad_inputs_together(http: httpx.Client) -> None:
    body = {"version": SYNTH_VERSION, "input": {"duration": "long"}, "webhook": "file:///etc/passwd"}
    detail, fields = _invalid(http.post("/v1/predictions", json=body))
    assert detail.startswith("- webhook: must be an http(s) URL\n- input.duration: "), detail
    assert [f["field"] for f in fields] == ["webhook", "duration"]
