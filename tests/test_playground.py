"""The playground at ``/``, end to end: Debian's Chromium (tests/browser.py) against a real server on
loopback, serving the synth, the test models, and tiny MusicGen (small and melody) and Stable Audio
checkpoints. One browser and one server for the module; each test has a fresh context (an empty
profile, signed in by the link the server printed) unless it is about signing in.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from browser import DESKTOP, PHONE, Traffic, canvases_drawn, context, launch, wait_drawn
from harness import TESTS_DIR, Server, npm_installed, require
from overture.api.playground import ASSETS, FILES
from overture.models.stable_audio import HUB_ID as STABLE_AUDIO
from overture.testing import tiny_checkpoint

pytestmark = pytest.mark.timeout(300)

ROOT = TESTS_DIR.parent
WEB = ROOT / "web"
JS_DIR = TESTS_DIR / "js"
ARTIFACTS = ROOT / "test-artifacts" / "playground"
#: What the page's JavaScript and CSS may weigh, gzip-compressed, wavesurfer.js included.
BUDGET_BYTES = 500 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No ``--token``: the server makes one and prints the sign-in link, as ``make serve`` does.
    A page holds 5 predictions, so History has pages to turn."""
    root = tmp_path_factory.mktemp("playground")
    mono = tiny_checkpoint("musicgen", root / "mono")
    melody = tiny_checkpoint("musicgen-melody", root / "melody")
    stable = tiny_checkpoint("stable-audio", root / "stable-audio")
    # Every request in the log, to show that the token never reaches one.
    args = ["--workers", "inline", "--page-size", "5", "--no-cache", "--access-log"]
    args += ["--checkpoint", f"facebook/musicgen-small={mono}", "--checkpoint", f"facebook/musicgen-melody={melody}"]
    args += ["--checkpoint", f"{STABLE_AUDIO}={stable}"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        srv = Server(root / "data", *args, tokens=()).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def link(server: Server) -> str:
    """The sign-in link from the server's start-up lines."""
    match = re.search(r"Open the playground: (\S+#token=\S+)", server.log_path.read_text())
    assert match, server.log_path.read_text()
    return match.group(1)


@pytest.fixture(scope="module")
def token(link: str) -> str:
    return link.split("#token=", 1)[1]


@pytest.fixture(scope="module")
def api(server: Server, token: str) -> Iterator[httpx.Client]:
    with server.http(token) as http:
        yield http


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


#: Every recorder of the module's server's pages, for test_no_request_leaves_loopback.
RECORDERS: list[Traffic] = []


def recorder() -> Traffic:
    """A recorder of requests that test_no_request_leaves_loopback checks too."""
    traffic = Traffic()
    RECORDERS.append(traffic)
    return traffic


#: Every request of the pages of the module's tests that keep no recorder of their own.
TRAFFIC = recorder()


@pytest.fixture
def signed_in(browser: Browser, link: str) -> Iterator[BrowserContext]:
    with context(browser, TRAFFIC) as ctx:
        page = ctx.new_page()
        page.goto(link)
        expect(page.get_by_role("heading", name="Models")).to_be_visible()
        page.close()
        yield ctx


@pytest.fixture
def page(signed_in: BrowserContext) -> Page:
    return signed_in.new_page()


def open_model(page: Page, server: Server, ref: str) -> None:
    page.goto(f"{server.base_url}/models/{ref}")
    expect(page.locator("form.input-form")).to_be_visible()


def run_and_wait(page: Page, status: str = "succeeded", timeout: float = 90_000) -> str:
    page.get_by_role("button", name="Run", exact=True).click()
    run = page.locator(f".run[data-status={status}]")
    expect(run).to_be_visible(timeout=timeout)
    return run.get_attribute("data-prediction") or ""


def audio_duration(page: Page, selector: str = ".player audio") -> float:
    """The ``<audio>`` element's own duration, once the browser has read the file."""
    page.wait_for_function(
        "s => { const a = document.querySelector(s); return a && Number.isFinite(a.duration) && a.duration > 0 }",
        arg=selector,
    )
    return page.eval_on_selector(selector, "a => a.duration")


# -- signing in --------------------------------------------------------------------------------


def test_sign_in_by_the_printed_link_keeps_the_token_out_of_the_url(
    browser: Browser, server: Server, link: str, token: str
) -> None:
    assert link == f"{server.base_url}/#token={token}"
    traffic = recorder()
    with context(browser, traffic) as ctx:
        page = ctx.new_page()
        page.goto(link)
        expect(page.get_by_role("heading", name="Models")).to_be_visible()
        # Gone from the address bar and the history, kept by the browser, sent only as a header.
        assert token not in page.url and page.url == f"{server.base_url}/"
        assert page.evaluate("localStorage.getItem('overture.token')") == token
        assert all(token not in r.url for r in traffic.requests)
        assert f"{server.base_url}/v1/models" in traffic.authorized()
        # Another page of the same browser is signed in too.
        other = ctx.new_page()
        other.goto(f"{server.base_url}/predictions")
        expect(other.get_by_role("heading", name="History")).to_be_visible()
        # The link's own entry in the history was replaced: back leads to where the tab was before.
        page.go_back()
        assert page.url == "about:blank"
    # The server's log has it only where it was printed at the start, never in a request's line.
    lines = [line for line in server.log_path.read_text().splitlines() if token in line]
    assert lines == [f"  export REPLICATE_API_TOKEN={token}", f"Open the playground: {link}"]
    assert "GET /v1/models HTTP/1.1" in server.log_path.read_text()


def test_a_visitor_without_the_token_is_asked_for_it_and_a_wrong_one_is_refused(
    browser: Browser, server: Server, token: str
) -> None:
    with context(browser, TRAFFIC) as ctx:
        page = ctx.new_page()
        page.goto(f"{server.base_url}/#token=r8_not_the_token")
        expect(page.get_by_role("heading", name="Sign in to Overture")).to_be_visible()
        expect(page.get_by_test_id("signin-error")).to_contain_text("refused")
        page.get_by_label("API token").fill("r8_still_wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("signin-error")).to_have_text("The server refused that token.")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Models")).to_be_visible()


def test_a_link_with_another_token_asks_before_replacing_the_kept_one(
    browser: Browser, server: Server, token: str
) -> None:
    """Someone else's sign-in link does not quietly sign this browser in as them."""
    asked: list[str] = []
    with context(browser, recorder()) as ctx:
        page = ctx.new_page()
        page.goto(f"{server.base_url}/#token={token}")
        expect(page.get_by_role("heading", name="Models")).to_be_visible()
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.goto(f"{server.base_url}/predictions#token=r8_someone_else")
        expect(page.get_by_role("heading", name="History")).to_be_visible()
        assert len(asked) == 1 and "different token" in asked[0]
        assert page.evaluate("localStorage.getItem('overture.token')") == token and "#" not in page.url
        # The same token again asks nothing.
        page.goto(f"{server.base_url}/compare#token={token}")
        expect(page.get_by_role("heading", name="Compare")).to_be_visible()
        assert len(asked) == 1
        # Accepted, the link's token replaces the kept one (which this server then refuses).
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
        page.goto(f"{server.base_url}/#token=r8_someone_else")
        expect(page.get_by_role("heading", name="Sign in to Overture")).to_be_visible()
        assert len(asked) == 2


# -- the form ----------------------------------------------------------------------------------


def _input_schema(api: httpx.Client, ref: str) -> tuple[list[tuple[str, dict]], dict]:
    openapi = api.get(f"/v1/models/{ref}").raise_for_status().json()["latest_version"]["openapi_schema"]
    schemas = openapi["components"]["schemas"]
    properties = sorted(schemas["Input"]["properties"].items(), key=lambda item: item[1]["x-order"])
    return properties, schemas


@pytest.mark.parametrize(
    "ref", ["overture/synth", "meta/musicgen", "stability-ai/stable-audio-open-1.0", "riffusion/riffusion"]
)
def test_the_form_matches_the_schema(page: Page, server: Server, api: httpx.Client, ref: str) -> None:
    properties, schemas = _input_schema(api, ref)
    open_model(page, server, ref)
    expect(page.get_by_test_id("description")).to_have_text(api.get(f"/v1/models/{ref}").json()["description"])
    # Every field, in x-order.
    assert page.eval_on_selector_all("[data-field]", "rows => rows.map(r => r.dataset.field)") == [
        name for name, _ in properties
    ]
    for name, spec in properties:
        if "allOf" in spec:
            spec = {**schemas[spec["allOf"][0]["$ref"].rsplit("/", 1)[1]], **spec}
        control = page.locator(f"[data-field={name}] [name={name}]")
        expect(control).to_have_count(1)
        kind = control.evaluate("c => c.tagName === 'SELECT' ? 'select' : c.type")
        default = spec.get("default")
        hint = page.locator(f"[data-field={name}] .hint")
        if "enum" in spec:
            assert kind == "select"
            options = control.evaluate("s => [...s.options].map(o => o.textContent)")
            assert [o for o in options if o != "(none)"] == [str(c) for c in spec["enum"]]
            assert control.evaluate("s => s.selectedOptions[0]?.textContent") == str(default if default else "(none)")
        elif spec.get("format") == "uri":
            assert kind == "file"
        elif spec["type"] == "boolean":
            assert kind == "checkbox" and control.is_checked() == bool(default)
        elif spec["type"] in ("integer", "number"):
            assert kind == "number"
            for bound, attribute in (("minimum", "min"), ("maximum", "max")):
                expected = spec.get(bound)
                given = control.get_attribute(attribute)
                assert (float(given) if given is not None else None) == expected, (name, bound)
            value = control.input_value()
            assert value == "" if default is None else float(value) == default, name
        else:
            assert control.input_value() == (default or "")
        if spec.get("description"):
            expect(hint).to_contain_text(spec["description"])


#: Form controls that no label names, on the page: what a screen reader would read as nothing.
UNLABELED = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter(c => !(c.labels?.length || c.getAttribute('aria-label') || c.textContent.trim()))
    .map(c => c.outerHTML)"""


def test_every_control_is_labeled_and_a_version_page_runs_from_the_keyboard(
    page: Page, server: Server, api: httpx.Client
) -> None:
    for path in ("/models/meta/musicgen", "/predictions", "/compare"):
        page.goto(f"{server.base_url}{path}")
        expect(page.locator("main h1")).to_be_visible()
        page.wait_for_load_state("networkidle")
        assert page.evaluate(UNLABELED) == [], path
    # The page of one version: fill it in, and run it, with the keys alone.
    version = api.get("/v1/models/overture/synth").json()["latest_version"]["id"]
    page.goto(f"{server.base_url}/models/overture/synth/versions/{version}")
    page.get_by_role("tab", name="Form").focus()
    page.keyboard.press("Tab")
    expect(page.locator("[name=prompt]")).to_be_focused()
    page.keyboard.type("a march")
    page.keyboard.press("Tab")
    expect(page.locator("[name=duration]")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("1")
    page.keyboard.press("Enter")  # submits the form, as Run does
    expect(page.locator(".run[data-status=succeeded]")).to_be_visible()
    made = api.get(f"/v1/predictions/{page.locator('.run').get_attribute('data-prediction')}").json()
    assert made["version"] == version and made["input"] == {"prompt": "a march", "duration": 1}


def test_a_422_is_shown_beside_its_field(page: Page, server: Server) -> None:
    open_model(page, server, "overture/synth")
    page.locator("[name=duration]").fill("100000")
    page.get_by_role("button", name="Run", exact=True).click()
    error = page.locator("[data-error-for=duration]")
    expect(error).to_contain_text("600")
    expect(page.locator("[data-field=duration]")).to_have_class(re.compile(r"\binvalid\b"))
    expect(page.locator("[name=duration]")).to_be_focused()
    expect(page.locator("[data-error-for=prompt]")).to_be_empty()
    expect(page.locator(".run")).to_have_count(0)


# -- runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "inputs", "seconds"),
    [
        ("overture/synth", {"prompt": "techno 128 bpm", "duration": "3"}, 3.0),
        ("stability-ai/stable-audio-open-1.0", {"prompt": "warm pads", "duration": "2", "steps": "3"}, 2.0),
    ],
)
def test_a_run_plays_its_asked_duration_with_waveform_and_spectrogram(
    page: Page, server: Server, ref: str, inputs: dict[str, str], seconds: float
) -> None:
    open_model(page, server, ref)
    for name, value in inputs.items():
        page.locator(f"[name={name}]").fill(value)
    run_and_wait(page)
    assert audio_duration(page) == pytest.approx(seconds, abs=0.01)
    expect(page.locator(".player[data-ready]")).to_be_visible()
    page.wait_for_function("() => document.querySelector('.spectrogram canvas')")
    # Drawn: the waveform's canvases and the spectrogram's each have painted pixels.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.spectrogram canvas')].some(c => c.width > 0)", timeout=10_000
    )
    assert any(canvases_drawn(page, "[data-testid=waveform]"))
    assert any(canvases_drawn(page, "[data-testid=spectrogram]"))
    expect(page.get_by_test_id("time")).to_contain_text("Ran ")
    expect(page.get_by_role("link", name=re.compile(r"^Download "))).to_have_count(1)
    expect(page.get_by_role("progressbar", name="Progress")).to_have_attribute("value", "100")


def test_a_streamed_musicgen_run_plays_before_it_succeeds(page: Page, server: Server, api: httpx.Client) -> None:
    open_model(page, server, "meta/musicgen")
    page.locator("[name=model_version]").select_option(label="small")
    page.locator("[name=prompt]").fill("lo-fi beat")
    page.locator("[name=duration]").fill("15")
    expect(page.get_by_label("Play as it is made (stream)")).to_be_checked()
    pid = run_and_wait(page)
    expect(page.get_by_test_id("live")).to_contain_text("chunk")
    assert page.locator(".run").get_attribute("data-audio-state") == "running"
    first_chunk_ms = float(page.locator(".run").get_attribute("data-first-chunk-at") or "nan")
    completed = api.get(f"/v1/predictions/{pid}").json()["completed_at"]
    completed_ms = datetime.fromisoformat(completed.replace("Z", "+00:00")).timestamp() * 1000
    # The first second sounded (was scheduled to, on the page's clock) before the clip was done.
    assert first_chunk_ms < completed_ms, (first_chunk_ms, completed_ms)
    assert audio_duration(page) == pytest.approx(15.0, abs=0.01)


def test_cancel_stops_a_run(page: Page, server: Server, api: httpx.Client) -> None:
    open_model(page, server, "tests/steps")
    page.locator("[name=steps]").fill("2000")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator(".run[data-status=processing]")).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".run[data-status=canceled]")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    pid = page.locator(".run").get_attribute("data-prediction")
    assert api.get(f"/v1/predictions/{pid}").json()["status"] == "canceled"


def test_a_run_created_after_the_visitor_left_is_not_followed(page: Page, server: Server, api: httpx.Client) -> None:
    """The create request is held until the visitor has gone to History: the page then neither shows
    nor polls the run it answers with."""
    open_model(page, server, "tests/steps")
    page.locator("[name=steps]").fill("2000")
    held: list[Route] = []
    page.route("**/v1/models/tests/steps/predictions", lambda route: held.append(route))
    page.get_by_role("button", name="Run", exact=True).click()
    while not held:
        page.wait_for_timeout(20)
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    with page.expect_response("**/v1/models/tests/steps/predictions") as created:
        held[0].continue_()
    pid = created.value.json()["id"]
    before = len(TRAFFIC.requests)
    page.wait_for_timeout(1500)  # several of a run's polls (every 0.4 s)
    assert [r.url for r in TRAFFIC.requests[before:] if pid in r.url] == []
    api.post(f"/v1/predictions/{pid}/cancel").raise_for_status()


def test_a_model_without_its_weights_fails_saying_how_to_get_them(page: Page, server: Server) -> None:
    open_model(page, server, "meta/musicgen")
    expect(page.get_by_role("note")).to_contain_text("large")
    page.locator("[name=model_version]").select_option(label="large")
    page.locator("[name=prompt]").fill("jazz")
    page.locator("[name=duration]").fill("1")
    run_and_wait(page, "failed")
    expect(page.locator(".run .error")).to_contain_text("overture serve --checkpoint facebook/musicgen-large=")


def test_a_hummed_melody_recorded_from_the_microphone_drives_musicgen_melody(
    page: Page, server: Server, api: httpx.Client
) -> None:
    open_model(page, server, "meta/musicgen")
    page.locator("[name=model_version]").select_option(label="melody")
    page.locator("[name=prompt]").fill("orchestral arrangement")
    page.locator("[name=duration]").fill("2")
    # The page's own clock at each click: on a busy machine a click lands late, and the recording
    # lasts from the first click's start of the microphone to the second click.
    page.evaluate("() => { window.clicks = []; addEventListener('click', () => clicks.push(performance.now()), true) }")
    record = page.get_by_role("button", name="Record from microphone")
    record.click()
    stop = page.get_by_role("button", name="Stop recording")
    expect(stop).to_be_visible()
    page.wait_for_timeout(1500)
    stop.click()
    expect(page.locator("[data-field=input_audio] .file-status")).to_have_text("recording.wav")
    started, stopped = page.evaluate("clicks")
    assert 0.5 <= audio_duration(page, "[data-field=input_audio] audio") <= (stopped - started) / 1000 + 0.1
    pid = run_and_wait(page)
    used = api.get(f"/v1/predictions/{pid}").json()
    assert re.fullmatch(rf"{re.escape(server.base_url)}/v1/files/\w+", used["input"]["input_audio"])
    assert "melody" in used["logs"].lower()


def test_a_file_input_takes_a_picked_or_a_dropped_file(page: Page, server: Server, tmp_path: Path) -> None:
    """Each is uploaded through the Files API when the run starts, and reaches the model intact."""
    picked = tmp_path / "notes.txt"
    picked.write_bytes(b"picked, not dropped\n")
    first = tmp_path / "first.txt"
    first.write_bytes(b"picked, then replaced\n")
    open_model(page, server, "tests/file-echo")
    preview = page.locator("[data-field=audio] audio")
    page.locator("[name=audio]").set_input_files(first)
    replaced = preview.get_attribute("src") or ""
    page.evaluate(
        "() => { const revoke = URL.revokeObjectURL; window.revoked = [];"
        " URL.revokeObjectURL = u => { revoked.push(u); revoke(u) } }"
    )
    page.locator("[name=audio]").set_input_files(picked)
    expect(page.locator("[data-field=audio] .file-status")).to_have_text("notes.txt")
    # The replaced file's preview is let go: its blob URL is revoked, not kept for the page's life.
    assert replaced.startswith("blob:") and preview.get_attribute("src") != replaced
    assert page.evaluate("revoked") == [replaced]
    # The API tab shows a file not yet sent as a placeholder, and uploads nothing to show it.
    uploads = len([r for r in TRAFFIC.requests if r.method == "POST" and r.url.endswith("/v1/files")])
    page.get_by_role("tab", name="API").click()
    expect(page.locator("pre[data-language=Python]")).to_contain_text('"audio": "<the URL of notes.txt once uploaded>"')
    assert len([r for r in TRAFFIC.requests if r.method == "POST" and r.url.endswith("/v1/files")]) == uploads
    page.get_by_role("tab", name="Form").click()
    run_and_wait(page)
    expect(page.locator(".output-text")).to_contain_text(hashlib.sha256(picked.read_bytes()).hexdigest())

    open_model(page, server, "tests/file-echo")
    dropped = b"dropped, not picked\n"
    transfer = page.evaluate_handle(
        """text => { const t = new DataTransfer(); t.items.add(new File([text], 'drop.txt')); return t }""",
        dropped.decode(),
    )
    page.locator("[data-drop=audio]").dispatch_event("drop", {"dataTransfer": transfer})
    expect(page.locator("[data-field=audio] .file-status")).to_have_text("drop.txt")
    run_and_wait(page)
    expect(page.locator(".output-text")).to_contain_text(hashlib.sha256(dropped).hexdigest())
    expect(page.get_by_role("link", name="Download echo.txt")).to_be_visible()


# -- history, sharing ---------------------------------------------------------------------------


def test_history_lists_filters_pages_and_reopens(
    page: Page, signed_in: BrowserContext, server: Server, api: httpx.Client, browser: Browser
) -> None:
    made = []
    # Six or more: more than a page.
    for i in range(4):
        made.append(_create(api, "overture/synth", {"prompt": f"history tune {i}", "duration": 1}))
    # Text that looks like a URL and is none: History and the run's page show it as text.
    malformed = _create(api, "tests/steps", {"steps": 1, "label": "http://["})
    failed = _create(api, "tests/steps", {"steps": 1, "fail": True, "label": "<b>tag</b>"})
    newest = _create(api, "tests/steps", {"steps": 1, "label": "<b>tag</b>"})
    page.goto(f"{server.base_url}/predictions")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(5)  # a page
    assert rows.first.get_attribute("data-prediction") == newest  # newest first
    expect(rows.locator("canvas.mini-wave[data-drawn]").first).to_be_visible()
    assert any(canvases_drawn(page, "tbody"))
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(min(10, _total(api)))

    page.get_by_label("Model").select_option("overture/synth")
    expect(page).to_have_url(re.compile(r"\?model=overture%2Fsynth$"))
    expect(rows.first).to_have_attribute("data-prediction", made[-1])
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.model)")) == {"overture/synth"}
    page.get_by_label("Status").select_option("failed")
    expect(page.locator("p", has_text="No predictions match.")).to_be_visible()
    page.get_by_label("Model").select_option("")
    expect(rows.first).to_have_attribute("data-prediction", failed)
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.status)")) == {"failed"}

    # Reopen a past run: its inputs, logs, output and timings.
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_label("Model").select_option("overture/synth")
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="history tune 3")).to_be_visible()
    expect(page.get_by_role("table", name="Inputs")).to_contain_text('"history tune 3"')
    expect(page.get_by_test_id("logs")).to_contain_text("Arrangement")
    assert audio_duration(page) == pytest.approx(1.0, abs=0.01)
    expect(page.locator("dl.timings")).to_contain_text("Completed")

    # Share: a signed link that plays without the token, in a browser that never signed in.
    shared = page.locator("#share-link").input_value()
    assert shared.startswith(f"{server.base_url}/p/{made[-1]}?expires=") and "token" not in shared
    anonymous = recorder()
    with context(browser, anonymous) as ctx:
        viewer = ctx.new_page()
        viewer.goto(shared)
        expect(viewer.get_by_role("heading", name="history tune 3")).to_be_visible()
        assert audio_duration(viewer) == pytest.approx(1.0, abs=0.01)
        expect(viewer.get_by_role("link", name="Tweak")).to_have_count(0)
        # What a model returns is shown as text, never as markup.
        viewer.goto(api.get(f"/v1/predictions/{newest}").json()["urls"]["web"])
        expect(viewer.get_by_test_id("output")).to_contain_text("<b>tag</b>:None")
        viewer.goto(api.get(f"/v1/predictions/{malformed}").json()["urls"]["web"])
        expect(viewer.get_by_test_id("output")).to_contain_text("http://[:None")
    assert anonymous.authorized() == [] and len(anonymous.requests) > 3

    # Tweak: the form again, with that run's inputs.
    page.get_by_role("link", name="Tweak").click()
    expect(page.locator("[name=prompt]")).to_have_value("history tune 3")
    expect(page.locator("[name=duration]")).to_have_value("1")


def _create(api: httpx.Client, ref: str, input: dict) -> str:
    reply = api.post(f"/v1/models/{ref}/predictions", json={"input": input}, headers={"Prefer": "wait"})
    body = reply.raise_for_status().json()
    assert body["status"] in ("succeeded", "failed"), body
    return body["id"]


def _total(api: httpx.Client) -> int:
    count, url = 0, "/v1/predictions"
    while url:
        page = api.get(url).json()
        count += len(page["results"])
        url = page["next"]
    return count


def test_the_prediction_list_filters_by_model_and_status(api: httpx.Client) -> None:
    """History's filters are query parameters of GET /v1/predictions (an Overture extension)."""
    for _ in range(6):
        _create(api, "tests/steps", {"steps": 0})
    first = api.get("/v1/predictions", params={"model": "tests/steps", "status": "succeeded"}).json()
    assert len(first["results"]) == 5 and {(p["model"], p["status"]) for p in first["results"]} == {
        ("tests/steps", "succeeded")
    }
    # The next page keeps the filters.
    assert first["next"] is not None and "model=tests%2Fsteps&status=succeeded" in first["next"]
    second = api.get(first["next"]).json()
    assert second["results"] and {(p["model"], p["status"]) for p in second["results"]} == {
        ("tests/steps", "succeeded")
    }
    assert not {p["id"] for p in first["results"]} & {p["id"] for p in second["results"]}
    bad = api.get("/v1/predictions", params={"model": "steps", "status": "done"})
    assert bad.status_code == 422
    assert [f["field"] for f in bad.json()["invalid_fields"]] == ["model", "status"]
    assert "'done' is not one of starting, processing, succeeded, canceled, failed" in bad.json()["detail"]


def _env(token: str) -> dict[str, str]:
    """A reader's environment: their token, and no base URL, which each snippet names itself."""
    env = {k: v for k, v in os.environ.items() if k != "REPLICATE_BASE_URL"}
    return {**env, "REPLICATE_API_TOKEN": token}


def test_the_api_tabs_python_snippet_runs(page: Page, server: Server, api: httpx.Client, token: str) -> None:
    open_model(page, server, "overture/synth")
    page.locator("[name=prompt]").fill('a "quoted" waltz in 3/4')
    page.locator("[name=duration]").fill("2")
    page.get_by_role("tab", name="API").click()
    python = page.locator("pre[data-language=Python]").inner_text()
    version = api.get("/v1/models/overture/synth").json()["latest_version"]["id"]
    # The seed document's style exactly: only what differs from the defaults, the base URL filled in.
    assert python == (
        "# pip install replicate\n"
        "# export REPLICATE_API_TOKEN=<your token>\n"
        "import os\n"
        "\n"
        f'os.environ["REPLICATE_BASE_URL"] = "{server.base_url}"  # this Overture server\n'
        "import replicate\n"
        "\n"
        "output = replicate.run(\n"
        f'    "overture/synth:{version}",\n'
        "    input={\n"
        '        "prompt": "a \\"quoted\\" waltz in 3/4",\n'
        '        "duration": 2\n'
        "    }\n"
        ")\n"
        "print(output)\n"
    )
    for language in ("JavaScript", "curl"):
        assert server.base_url in page.locator(f"pre[data-language={language}]").inner_text()
    done = subprocess.run([sys.executable, "-c", python], env=_env(token), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{re.escape(server.base_url)}/v1/outputs/\w+/output\.wav\n", done.stdout)


def test_the_api_tabs_javascript_and_curl_snippets_ask_for_the_same_run(page: Page, server: Server, token: str) -> None:
    """The JavaScript snippet runs with the npm client of tests/js, and the curl command as written."""
    open_model(page, server, "overture/synth")
    page.locator("[name=prompt]").fill("it's a polka")
    page.locator("[name=duration]").fill("1")
    page.get_by_role("tab", name="API").click()
    javascript = page.locator("pre[data-language=JavaScript]").inner_text()
    node = npm_installed(JS_DIR)
    script = JS_DIR / f"snippet-{os.getpid()}.mjs"  # beside node_modules, where `import "replicate"` resolves
    script.write_text(javascript)
    try:
        done = subprocess.run(
            [node, script.name], cwd=JS_DIR, env=_env(token), capture_output=True, text=True, timeout=120
        )
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{re.escape(server.base_url)}/v1/outputs/\w+/output\.wav.*\n", done.stdout)
    curl = page.locator("pre[data-language=curl]").inner_text()
    require(shutil.which("curl") is not None, "curl (apt-get install curl)")
    # As its reader would: with their token in place of the placeholder.
    script = curl.replace("<your token>", token)
    done = subprocess.run(["bash", "-c", script], env=_env(token), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["status"] == "succeeded" and created["input"] == {"prompt": "it's a polka", "duration": 1}


def test_compare_plays_two_models_side_by_side(page: Page, server: Server) -> None:
    page.goto(f"{server.base_url}/compare")
    page.get_by_label("Prompt").fill("calm piano")
    page.get_by_label("Duration").fill("2")
    page.get_by_label("overture/synth").check()
    page.get_by_label("meta/musicgen (small)").check()
    page.get_by_role("button", name="Run all").click()
    for entry in ("overture/synth", "meta/musicgen (small)"):
        card = page.locator(f"article[data-entry='{entry}']")
        expect(card.locator(".run[data-status=succeeded]")).to_be_visible(timeout=90_000)
        expect(card.get_by_test_id("compare-time")).to_have_text(re.compile(r"^\d+\.\d\d s on this machine$"))
        assert audio_duration(page, f"article[data-entry='{entry}'] .player audio") == pytest.approx(2.0, abs=0.01)


def test_errors_say_the_server_is_down(browser: Browser, tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--workers", "inline").start()
    traffic = Traffic()  # this test's own server, on its own port
    try:
        with context(browser, traffic) as ctx:
            page = ctx.new_page()
            page.goto(f"{srv.base_url}/models/overture/synth#token={srv.tokens[0]}")
            expect(page.locator("form.input-form")).to_be_visible()
            srv.stop()
            page.get_by_role("button", name="Run", exact=True).click()
            expect(page.get_by_test_id("form-error")).to_contain_text("is not answering")
    finally:
        srv.stop()
    assert traffic.origins() == {("127.0.0.1", srv.port)}


# -- what the page loads ------------------------------------------------------------------------


#: Records, on the page's clock (from the start of navigation), when the model page's form appears.
FORM_SHOWN = """new MutationObserver((_, observer) => {
    if (document.querySelector('form.input-form')) {
        window.formShownAt = performance.now();
        observer.disconnect();
    }
}).observe(document, {childList: true, subtree: true})"""


def test_screenshots_and_first_paint(browser: Browser, server: Server, link: str) -> None:
    """Screenshots for docs/playground.md (copied there by hand), and how long the model page takes to
    show its form, from the start of navigation: reported, not asserted."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        with context(browser, TRAFFIC, viewport) as ctx:
            page = ctx.new_page()
            page.add_init_script(FORM_SHOWN)
            page.goto(link)
            expect(page.get_by_role("heading", name="Models")).to_be_visible()
            page.goto(f"{server.base_url}/models/overture/synth")
            expect(page.locator("form.input-form")).to_be_visible()
            shown = page.evaluate("formShownAt")
            print(f"\nthe model page's form shown ({name}): {shown:.0f} ms after navigation started")
            page.screenshot(path=ARTIFACTS / f"model-{name}.png", full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]  # nothing overflows
            page.locator("[name=prompt]").fill("dreamy synthwave at 96 bpm in A minor")
            page.locator("[name=duration]").fill("4")
            run_and_wait(page)
            expect(page.locator(".player[data-ready]")).to_be_visible()
            wait_drawn(page, "[data-testid=spectrogram]")  # it paints after the waveform
            page.screenshot(path=ARTIFACTS / f"run-{name}.png", full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.goto(f"{server.base_url}/compare")
            page.get_by_label("Prompt").fill("dreamy synthwave")
            page.get_by_label("Duration").fill("2")
            page.get_by_label("overture/synth").check()
            page.get_by_label("meta/musicgen (small)").check()
            page.get_by_role("button", name="Run all").click()
            expect(page.locator(".compare-card .player[data-ready]")).to_have_count(2, timeout=90_000)
            wait_drawn(page, ".compare-card [data-testid=waveform]")
            wait_drawn(page, ".compare-card [data-testid=spectrogram]")
            page.screenshot(path=ARTIFACTS / f"compare-{name}.png", full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    assert sorted(p.name for p in ARTIFACTS.glob("*.png")) == sorted(
        f"{view}-{size}.png" for view in ("compare", "model", "run") for size in ("desktop", "phone")
    )


def test_the_bundle_is_small() -> None:
    sizes = {name: len(gzip.compress((ASSETS / name).read_bytes(), 9)) for name in FILES}
    print(f"\nplayground gzip-compressed: {sizes}, {sum(sizes.values())} bytes in all")
    assert sum(sizes.values()) < BUDGET_BYTES


def test_without_its_built_files_the_server_says_what_is_missing(tmp_path: Path) -> None:
    """An installation that lost the build (none is made without it) still serves the API."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "overture", source / "overture", ignore=shutil.ignore_patterns("playground"))
    path = os.pathsep.join([str(TESTS_DIR), str(source)])
    srv = Server(tmp_path / "data", "--workers", "inline", launcher=("env", f"PYTHONPATH={path}")).start()
    try:
        with srv.http() as http:
            page = http.get("/models/overture/synth")
            assert page.status_code == 503
            assert "missing from this installation (index.html, app.js, app.css" in page.text
            assert "make install" in page.text and "nodejs npm" in page.text
            assert http.get("/playground/app.js").status_code == 404
            assert http.get("/v1/models/overture/synth").status_code == 200
    finally:
        srv.stop()


def test_make_serves_the_committed_build_when_npm_cannot_install(tmp_path: Path) -> None:
    """Offline, ``npm ci`` fails: ``make install`` goes on with the committed build and says so, except
    under CI, where a build that fails fails. An ``npm`` that fails as an offline one stands in."""
    make = shutil.which("make")
    require(make is not None, "make (apt-get install make)")
    assert make is not None
    npm = tmp_path / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error network request failed' >&2\nexit 1\n")
    npm.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    offline = subprocess.run([make, "-B", "playground"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert offline.returncode == 0, offline.stderr
    assert "the playground did not build" in offline.stdout and "serving the committed build" in offline.stdout
    under_ci = subprocess.run(
        [make, "-B", "playground"], cwd=ROOT, env={**env, "CI": "true"}, capture_output=True, text=True
    )
    assert under_ci.returncode != 0 and "the playground did not build" in under_ci.stderr


def test_the_committed_bundle_is_what_the_source_builds(tmp_path: Path) -> None:
    """The build is committed for checkouts without node; this keeps it from going stale. It compares
    with the commit, not the working tree: ``make install`` rebuilds that copy before the tests run."""
    git = shutil.which("git")
    require(git is not None and (ROOT / ".git").exists(), "a git checkout")
    assert git is not None
    node = npm_installed(WEB)
    subprocess.run([node, "build.mjs", str(tmp_path)], cwd=WEB, check=True, timeout=120)
    for name in ("index.html", *FILES):
        path = (ASSETS / name).relative_to(ROOT).as_posix()
        committed = subprocess.run([git, "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
        assert (tmp_path / name).read_bytes() == committed, f"{path} is stale: make install, then commit it"


def test_a_run_shows_its_status_logs_and_progress_as_it_goes(page: Page, server: Server) -> None:
    open_model(page, server, "tests/steps")
    page.locator("[name=steps]").fill("6")
    page.locator("[name=step_seconds]").fill("0.4")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("processing")
    progress = page.get_by_role("progressbar", name="Progress")
    page.wait_for_function(
        "() => { const p = document.querySelector('progress'); return p.value > 0 && p.value < 100 }"
    )
    expect(page.get_by_test_id("logs")).to_contain_text("/6 [")
    expect(page.get_by_role("status")).to_have_text("succeeded")
    expect(progress).to_have_attribute("value", "100")
    expect(page.get_by_test_id("logs")).to_contain_text("finished 6 steps")
    expect(page.get_by_test_id("output")).to_contain_text("done:None")


def test_no_request_leaves_loopback(page: Page, server: Server, api: httpx.Client) -> None:
    """Every page, then every request of every recorder of the module's tests (this one is last):
    all to the server, on 127.0.0.1 and its port."""
    pid = _create(api, "overture/synth", {"prompt": "loopback", "duration": 1})
    for path in ("/", "/models/overture/synth", "/predictions", f"/predictions/{pid}", "/compare"):
        page.goto(f"{server.base_url}{path}")
        expect(page.locator("main h1")).to_be_visible()
    assert all(traffic.requests for traffic in RECORDERS)
    for traffic in RECORDERS:
        assert traffic.origins() == {("127.0.0.1", server.port)}, [r.url for r in traffic.requests]
