"""The playground: the browser app at ``/``, built from ``web/`` into ``overture/playground``.

The built files are committed and shipped in the wheel, so a clone or an install without node still
serves it; ``make install`` rebuilds them where node and npm exist (docs/playground.md). Every page
of the app is the same shell: the app reads its path, and asks the JSON API for the rest with the
token the browser keeps, so no page here needs a token, and none shows anything but the shell.
"""

from __future__ import annotations

import hashlib
import html
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from overture.api.deps import Present, Svc
from overture.api.errors import ApiError
from overture.api.signing import check_signed, page_subject

#: Where the build puts the app (package data; see pyproject.toml).
ASSETS = Path(__file__).resolve().parent.parent / "playground"
#: The files of the app that the shell loads, by the name it loads them under.
FILES = {"app.js": "text/javascript", "app.css": "text/css"}

router = APIRouter(include_in_schema=False)


@cache
def _version() -> str:
    """A digest of the built files: the shell asks for ``app.js?v=<digest>``, which a browser may
    then keep for good, and a rebuilt app gets a new URL."""
    digest = hashlib.sha256()
    for name in FILES:
        digest.update((ASSETS / name).read_bytes())
    return digest.hexdigest()[:16]


@cache
def _template() -> str:
    """The shell's HTML, read once, like ``_version``: a rebuilt app is served after a restart."""
    return (ASSETS / "index.html").read_text()


def _missing() -> list[str]:
    return [name for name in ("index.html", *FILES) if not (ASSETS / name).is_file()]


def _shell(svc: Svc, present: Present) -> HTMLResponse:
    if missing := _missing():
        text = (
            f"The playground's files are missing from this installation ({', '.join(missing)} in {ASSETS}). "
            "Rebuild them with `make install` where node and npm are installed (apt-get install nodejs npm), "
            "or reinstall Overture. The API itself works without them."
        )
        return HTMLResponse(f"<!doctype html><title>Overture</title><p>{html.escape(text)}</p>", status_code=503)
    prefix = present.base.split("://", 1)[-1].partition("/")[2]
    # Without JavaScript, the page still says what the server offers and how to reach it.
    models = "".join(
        f"<li><code>{html.escape(m.ref)}</code>: {html.escape(m.description)}</li>"
        for m in svc.engine.registry.models.values()
    )
    page = (
        _template()
        .replace("{{root}}", html.escape(f"/{prefix}/" if prefix else "/"))
        .replace("{{version}}", _version())
        .replace("{{base}}", html.escape(present.base))
        .replace("{{models}}", models)
    )
    # The shell is the same for everyone, but it must not outlive an upgrade in a browser's cache.
    # The page loads nothing from elsewhere, and the policy holds it to that; no Referer carries a
    # shared page's signature away.
    headers = {
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": _policy(present),
    }
    return HTMLResponse(page, headers=headers)


def _policy(present: Present) -> str:
    """Only this server: itself, and its public URL where that is another origin (a proxy's name).
    wavesurfer.js sets inline styles; recordings and previews play from ``blob:`` URLs."""
    server = "'self' " + "/".join(present.base.split("/")[:3])
    return (
        f"default-src 'self'; script-src 'self'; connect-src {server}; media-src {server} blob:; "
        f"img-src {server} data: blob:; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


@router.get("/")
@router.get("/models/{model_owner}/{model_name}")
@router.get("/models/{model_owner}/{model_name}/versions/{version_id}")
@router.get("/predictions")
@router.get("/predictions/{prediction_id}")
@router.get("/compare")
def page(svc: Svc, present: Present) -> HTMLResponse:
    """A page of the app for a browser signed in with the token (the app keeps it, not the URL)."""
    return _shell(svc, present)


@router.get("/p/{prediction_id}")
def shared_page(
    prediction_id: str,
    request: Request,
    svc: Svc,
    present: Present,
    expires: str = Query(default=""),
    signature: str = Query(default=""),
) -> HTMLResponse:
    """A prediction's page without the token (``urls.web``, what Share gives): its signature lets the
    app read that one prediction (``GET /v1/predictions/<id>`` with the same query) and its output."""
    try:
        check_signed(svc.keys, page_subject(prediction_id), expires, signature)
    except ApiError as exc:
        # A person who opened the link reads why in words; an API client keeps its problem JSON.
        if "text/html" not in request.headers.get("accept", ""):
            raise
        text = f"This shared link does not open: {exc.detail}. Ask whoever shared it for a new link."
        title = "Link invalid or expired"
        page = f"<!doctype html><title>{title} · Overture</title><h1>{title}</h1><p>{html.escape(text)}</p>"
        return HTMLResponse(page, status_code=exc.status, headers={"Referrer-Policy": "no-referrer"})
    return _shell(svc, present)


@router.get("/playground/{name}")
def asset(name: str, v: str | None = Query(default=None)) -> FileResponse:
    if name not in FILES or _missing():
        raise ApiError(404, f"The playground has no file {name!r}")
    # A versioned URL names these exact bytes; any other is looked at again each time.
    cache_control = "public, max-age=31536000, immutable" if v == _version() else "no-cache"
    return FileResponse(ASSETS / name, media_type=FILES[name], headers={"Cache-Control": cache_control})
