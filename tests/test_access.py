"""Access: every /v1 route wants a valid token; signed URLs expire and name one file only; tokens
are compared in constant time and never logged; each token is an account of its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
import time
import urllib.parse

import httpx
import pytest
from starlette.requests import Request

from harness import OTHER_TOKEN, TOKEN, Server
from overture.api.auth import TokenAuth, owner_of
from overture.api.errors import ApiError

pytestmark = pytest.mark.timeout(120)

BAD_HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer null",
    "Token",
    "Basic " + base64.b64encode(TOKEN.encode()).decode(),
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"{TOKEN}",
    "Bearer r8_wrong_token",
]


def _routes(server: Server) -> list[tuple[str, str]]:
    """Every /v1 operation in the server's own OpenAPI document, path parameters filled in."""
    spec = httpx.get(f"{server.base_url}/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in spec["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    ]


def test_every_v1_route_refuses_a_missing_malformed_or_wrong_token(server: Server) -> None:
    routes = _routes(server)
    assert {("GET", "/v1/files/x/download"), ("GET", "/v1/outputs/x/x"), ("GET", "/v1/predictions/x/stream")} <= set(
        routes
    )
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for method, path in routes:
            for header in BAD_HEADERS:
                headers = {"Authorization": header} if header is not None else {}
                response = http.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, header, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")


def test_signed_urls_expire_and_cannot_be_altered(server: Server) -> None:
    with server.http() as http:
        ids = [
            http.post(
                "/v1/models/overture/synth/predictions",
                json={"input": {"duration": 1, "seed": seed}},
                headers={"Prefer": "wait"},
            ).json()["id"]
            for seed in (1, 2)
        ]
        mine, other = (http.get(f"/v1/predictions/{pid}").json() for pid in ids)
    signed = urllib.parse.urlsplit(mine["signed_output"])
    query = dict(urllib.parse.parse_qsl(signed.query))
    other_path = urllib.parse.urlsplit(other["signed_output"]).path
    with httpx.Client(base_url=server.base_url, timeout=10) as anonymous:
        assert anonymous.get(f"{signed.path}?{signed.query}").status_code == 200
        altered = [
            (other_path, query),  # another prediction's output, my signature
            (signed.path.rsplit("/", 1)[0] + "/other.wav", query),  # another name
            (signed.path, {**query, "expires": str(int(query["expires"]) + 3600)}),  # a longer life
            (signed.path, {**query, "signature": query["signature"].upper()}),
            (signed.path, {"expires": query["expires"]}),
        ]
        for path, params in altered:
            assert anonymous.get(path, params=params).status_code == 403, (path, params)
        # Correctly signed but expired (signed here with the server's key): refused as expired.
        key = (server.data_dir / "signing.key").read_text().strip().encode()
        rel = urllib.parse.unquote(signed.path.removeprefix("/signed/outputs/"))
        expires = int(time.time()) - 1
        signature = hmac.new(key, f"{rel}:{expires}".encode(), hashlib.sha256).hexdigest()
        response = anonymous.get(signed.path, params={"expires": expires, "signature": signature})
        assert response.status_code == 403 and "expired" in response.json()["detail"]


def test_tokens_are_compared_in_constant_time_against_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: whichever token matches (or none), every configured token is compared with
    ``hmac.compare_digest``, so the time taken says nothing about which one, or how much, matched."""
    tokens = ["r8_aaaa", "r8_bbbb", "r8_cccc"]
    auth = TokenAuth(tokens)
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(a)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)

    def request(given: str) -> Request:
        return Request({"type": "http", "headers": [(b"authorization", f"Bearer {given}".encode())]})

    for given in tokens:
        calls.clear()
        assert auth(request(given)) == owner_of(given)
        assert calls == [t.encode() for t in tokens]
    for given in ("r8_aaab", "x"):
        calls.clear()
        with pytest.raises(ApiError) as refused:
            auth(request(given))
        assert refused.value.status == 401 and refused.value.detail == "You did not pass a valid authentication token"
        assert calls == [t.encode() for t in tokens]


def test_tokens_are_never_logged_and_key_files_are_0600(fresh_server: Server) -> None:
    srv = fresh_server.start()
    wrong = "r8_a_wrong_token_that_must_not_be_logged"
    with srv.http() as http:
        http.post("/v1/models/tests/faulty/predictions", json={"input": {"fault": "raise"}})
        http.post("/v1/models/tests/steps/predictions", json={"input": {"steps": "x"}})
    with srv.http(wrong) as http:
        assert http.get("/v1/predictions").status_code == 401
    with srv.http(OTHER_TOKEN) as http:
        assert http.get("/v1/predictions?cursor=%%%").status_code == 422
    time.sleep(0.5)
    srv.stop()
    log = srv.log_path.read_text()
    for token in (TOKEN, OTHER_TOKEN, wrong):
        assert token not in log
    assert stat.S_IMODE(os.stat(srv.data_dir / "signing.key").st_mode) == 0o600


def test_each_token_sees_only_its_own_files_and_outputs(server: Server) -> None:
    with server.http() as mine, server.http(OTHER_TOKEN) as other:
        file = mine.post("/v1/files", files={"content": ("mine.bin", b"private bytes")}).json()
        prediction = mine.post(
            "/v1/models/tests/file-echo/predictions",
            json={"input": {"audio": file["urls"]["get"]}},
            headers={"Prefer": "wait"},
        ).json()
        assert prediction["status"] == "succeeded", prediction
        output = prediction["output"]["file"]
        pid = prediction["id"]

        assert file["id"] not in {f["id"] for f in other.get("/v1/files").json()["results"]}
        for method, path in [
            ("GET", f"/v1/files/{file['id']}"),
            ("GET", f"/v1/files/{file['id']}/download"),
            ("DELETE", f"/v1/files/{file['id']}"),
            ("GET", f"/v1/predictions/{pid}"),
            ("GET", f"/v1/predictions/{pid}/stream"),
            ("POST", f"/v1/predictions/{pid}/cancel"),
            ("GET", output),
        ]:
            assert other.request(method, path).status_code == 404, (method, path)
        # Nor can another token use my file or my output as an input: to it they do not exist.
        for url, missing in (
            (file["urls"]["get"], f"file {file['id']} does not exist"),
            (output, f"output file {pid}/{output.rsplit('/', 1)[1]} does not exist"),
        ):
            response = other.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": url}})
            assert response.status_code == 422, response.text
            assert response.json()["invalid_fields"] == [{"field": "audio", "message": missing}]
        # All of it is still there for its owner.
        assert mine.get(f"/v1/files/{file['id']}/download").content == b"private bytes"
        assert mine.get(output).content == b"private bytes"
