"""Routes anyone can reach answer every malformed request with a 4xx problem, never a 500: signed
output URLs with broken signatures, expiries and names, and tokens that are not ASCII."""

from __future__ import annotations

import base64
import urllib.parse

import httpx
import pytest

from harness import Server, wait_finished
from overture.store.secrets import Keys

#: An output that exists, so a refusal can only come from the signature or the expiry.
_OUTPUT_INPUT = {"audio": "data:audio/wav;base64," + base64.b64encode(b"RIFF-not-really-audio").decode()}


@pytest.fixture(scope="module")
def signed_url(server: Server) -> urllib.parse.SplitResult:
    with server.http() as http:
        pid = http.post("/v1/models/tests/file-echo/predictions", json={"input": _OUTPUT_INPUT}).json()["id"]
        body = wait_finished(http, pid)
    return urllib.parse.urlsplit(body["signed_output"]["file"])


def _refused(response: httpx.Response) -> None:
    assert response.status_code in (403, 404), (response.request.url, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "signature",
    [
        "%C2%AD4",  # the fuzzer's find: a soft hyphen (non-ASCII) in the signature
        "%C3%A9" * 64,  # non-ASCII, as long as a real signature
        "%00",  # a control character
        "%0A%0D%09",
        "%F0%9F%8E%B5",  # an emoji, outside the Basic Multilingual Plane
        "%FF%FE",  # bytes that are not UTF-8
        "%ED%A0%80",  # an encoded lone surrogate
        "",
    ],
)
def test_a_malformed_signature_is_403(server: Server, signed_url: urllib.parse.SplitResult, signature: str) -> None:
    query = dict(urllib.parse.parse_qsl(signed_url.query))
    with httpx.Client(base_url=server.base_url) as anonymous:
        _refused(anonymous.get(f"{signed_url.path}?expires={query['expires']}&signature={signature}"))


@pytest.mark.parametrize(
    "expires",
    [
        "",
        "-1",
        "abc",
        "1e9",
        "0x10",
        "9" * 5000,  # past Python's limit on converting digits to an int
        "%D9%A3",  # an Arabic-Indic digit, which int() would accept
        "%00",
        "720398%0A",
    ],
)
def test_a_malformed_expiry_is_403(server: Server, signed_url: urllib.parse.SplitResult, expires: str) -> None:
    # Signed with the server's key, as the server would sign it: only the expiry can be refused.
    rel = "/".join(urllib.parse.unquote(signed_url.path).split("/")[-2:])
    signature = Keys(server.data_dir).sign(f"{rel}:{urllib.parse.unquote(expires, errors='surrogateescape')}")
    with httpx.Client(base_url=server.base_url) as anonymous:
        _refused(anonymous.get(f"{signed_url.path}?expires={expires}&signature={signature}"))
        _refused(anonymous.get(f"{signed_url.path}?signature={signature}"))  # no expiry at all


@pytest.mark.parametrize(
    "path",
    [
        "/signed/outputs/abc/x.wav?expires=720398&signature=%C2%AD4",
        "/signed/outputs/%C3%A9%C3%A8/x.wav?expires=720398&signature=00",
        "/signed/outputs/abc/%E2%80%AE%00.wav?expires=720398&signature=00",
        "/signed/outputs/%0A/%09?expires=99999999999&signature=%C2%AD",
        "/signed/outputs/%ED%A0%80/%F0%9F%8E%B5?expires=99999999999&signature=%ED%A0%80",
    ],
)
def test_non_ascii_and_control_characters_in_a_signed_path_are_refused(server: Server, path: str) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        _refused(anonymous.send(anonymous.build_request("GET", server.base_url + path)))


def test_a_valid_signed_url_still_serves_its_file(server: Server, signed_url: urllib.parse.SplitResult) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        response = anonymous.get(f"{signed_url.path}?{signed_url.query}")
    assert response.status_code == 200 and response.content == b"RIFF-not-really-audio"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer r8_t\xe9st",  # Latin-1 characters, as HTTP header bytes arrive
        "Bearer \xad4",
        "Token \xff\xfe",
        "Bearer r8_\x7f",
        "\xe9 r8_test_token_0123456789",
    ],
)
def test_a_token_that_is_not_ascii_is_401(server: Server, authorization: str) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        response = anonymous.get("/v1/predictions", headers={"Authorization": authorization.encode("latin-1")})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("route", ["/v1/outputs", "/signed/outputs"])
@pytest.mark.parametrize("long", ["name", "prediction"])
def test_an_output_name_longer_than_a_file_name_can_be_is_404(
    server: Server, signed_url: urllib.parse.SplitResult, route: str, long: str
) -> None:
    # Found by the parameter sweep in test_fuzz_api.py: the file system's ENAMETOOLONG was a 500.
    pid, name = urllib.parse.unquote(signed_url.path).split("/")[-2:]
    pid, name = ("9" * 5000, name) if long == "prediction" else (pid, "9" * 5000)
    query = {"expires": "99999999999", "signature": ""}
    if route == "/signed/outputs":
        # Signed with the server's key, so only the name can be refused.
        query["signature"] = Keys(server.data_dir).sign(f"{pid}/{name}:{query['expires']}")
    with server.http() as http:
        _refused(http.get(f"{route}/{pid}/{name}", params=query))
