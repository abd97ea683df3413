"""What a file and a shared link give to whoever opens them: an output served from the playground's
origin can never run script there, and a prediction's signed page (what Share gives) shows that one
run until the link expires, and nothing of the owner's webhook."""

from __future__ import annotations

import time
import urllib.parse

import httpx
import pytest

from harness import Receiver, Server, wait_finished

#: What a model could return, or a client upload: markup that would run script if shown as a page.
_PAGE = b"<html><script>fetch('/x?' + localStorage['overture.token'])</script></html>"
_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
_CONTAINED = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox; default-src 'none'"}


def _echo(http: httpx.Client, data: bytes, name: str, webhook: str | None = None) -> dict:
    """A ``tests/file-echo`` run of an uploaded file: its output file is the input, named ``echo`` with
    the upload's extension."""
    upload = http.post("/v1/files", files={"content": (name, data)}).raise_for_status().json()
    body: dict = {"input": {"audio": upload["urls"]["get"]}}
    if webhook:
        body["webhook"] = webhook
    pid = http.post("/v1/models/tests/file-echo/predictions", json=body).raise_for_status().json()["id"]
    done = wait_finished(http, pid)
    assert done["status"] == "succeeded", done
    assert done["output"]["file"].split("?")[0].endswith(f"/echo{name[name.rindex('.') :]}"), done["output"]
    return done


@pytest.mark.parametrize(("data", "name"), [(_PAGE, "page.html"), (_SVG, "picture.svg")])
def test_an_html_or_svg_output_is_a_download_that_runs_nothing(http: httpx.Client, data: bytes, name: str) -> None:
    done = _echo(http, data, name)
    for url in (done["output"]["file"], done["signed_output"]["file"]):
        reply = httpx.get(url, headers=dict(http.headers) if "/v1/" in url else {})
        assert reply.status_code == 200 and reply.content == data
        assert reply.headers["content-disposition"].startswith("attachment;"), url
        assert {k: reply.headers.get(k) for k in _CONTAINED} == _CONTAINED


def test_audio_output_plays_inline_but_still_runs_nothing(http: httpx.Client) -> None:
    done = _echo(http, b"RIFF-not-really-audio", "take.wav")
    reply = httpx.get(done["signed_output"]["file"])
    assert reply.headers["content-type"].startswith("audio/")
    assert reply.headers["content-disposition"].startswith("inline;")
    assert {k: reply.headers.get(k) for k in _CONTAINED} == _CONTAINED


@pytest.mark.parametrize(
    ("name", "media_type", "inline"), [("page.html", "text/html", False), ("a.png", "image/png", True)]
)
def test_an_uploaded_file_downloads_contained(http: httpx.Client, name: str, media_type: str, inline: bool) -> None:
    created = http.post("/v1/files", files={"content": (name, _PAGE, media_type)}).raise_for_status().json()
    reply = http.get(created["urls"]["download"])
    assert reply.content == _PAGE
    assert reply.headers["content-disposition"].startswith("inline;" if inline else "attachment;")
    assert {k: reply.headers.get(k) for k in _CONTAINED} == _CONTAINED


def _expires(url: str) -> int:
    return int(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["expires"][0])


def test_a_shared_link_shows_no_webhook_and_never_outlives_itself(
    http: httpx.Client, server: Server, receiver: Receiver
) -> None:
    done = _echo(http, b"RIFF-not-really-audio", "take.wav", webhook=f"{receiver.url}/hook")
    owned = http.get(f"/v1/predictions/{done['id']}").json()
    assert owned["webhook"] == f"{receiver.url}/hook" and "webhook_delivery" in owned
    link = urllib.parse.urlsplit(owned["urls"]["web"])
    time.sleep(1.1)  # the server's clock moves on: a fresh signature would now expire later
    with httpx.Client(base_url=server.base_url) as anonymous:
        shared = anonymous.get(f"/v1/predictions/{done['id']}?{link.query}").raise_for_status().json()
    assert not {"webhook", "webhook_events_filter", "webhook_delivery"} & shared.keys()
    assert shared["id"] == done["id"] and shared["status"] == "succeeded"
    limit = _expires(owned["urls"]["web"])
    signed = [shared["urls"]["web"], shared["urls"]["stream"], shared["signed_output"]["file"]]
    assert [_expires(url) for url in signed] == [limit] * 3
    # The owner, with the token, still gets fresh ones.
    assert _expires(http.get(f"/v1/predictions/{done['id']}").json()["urls"]["web"]) > limit


def test_a_bad_shared_link_gives_a_browser_a_page_and_a_client_a_problem(http: httpx.Client, server: Server) -> None:
    done = _echo(http, b"RIFF-not-really-audio", "take.wav")
    link = done["urls"]["web"].replace("signature=", "signature=x")
    with httpx.Client() as anonymous:
        page = anonymous.get(link, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
        assert "Link invalid or expired" in page.text and "not valid" in page.text
        problem = anonymous.get(link, headers={"Accept": "application/json"})
        assert problem.status_code == 403 and problem.headers["content-type"] == "application/problem+json"
