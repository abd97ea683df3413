"""What a route needs from the running server, as FastAPI dependencies.

They are ``async`` because they never block: FastAPI runs a plain ``def`` dependency on its thread
pool, and those hand-offs were most of what a poll cost the server (CPU a running model wants)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from overture.api.errors import invalid_request
from overture.api.present import Presenter
from overture.config import Settings
from overture.engine.engine import Engine
from overture.store.secrets import Keys


@dataclass
class Services:
    settings: Settings
    engine: Engine
    keys: Keys


async def services(request: Request) -> Services:
    return request.app.state.services


#: How the official JavaScript client names itself, unless its user gives it another ``userAgent``.
JAVASCRIPT_CLIENT = "replicate-javascript/"


async def presenter(request: Request) -> Presenter:
    svc: Services = request.app.state.services
    base = Presenter.public_base(request, svc.settings.public_url)
    # Output URLs that open without the token for those who read them without one: a request that
    # came with a signature instead (a stream), and the JavaScript client, whose FileOutput fetches
    # output URLs with no Authorization header. The Python client sends its token to them.
    headers = request.headers
    signed = "authorization" not in headers or headers.get("user-agent", "").startswith(JAVASCRIPT_CLIENT)
    return Presenter(
        base, svc.keys, svc.settings.signed_url_ttl_seconds, svc.settings.retention_hours, signed_outputs=signed
    )


Svc = Annotated[Services, Depends(services)]
Present = Annotated[Presenter, Depends(presenter)]


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The position a cursor points at (None: start from the newest)."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(text.removeprefix("seq:"))
    except ValueError:
        raise invalid_request([("cursor", "malformed pagination cursor")]) from None
