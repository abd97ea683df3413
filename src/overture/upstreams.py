"""Upstreams (other Replicate APIs that predictions can be relayed to) and the routes that send
models there, as the operator configures them; parsed once at start-up, so that a typo stops the server."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Literal

#: The ``provider`` of a prediction that ran on this server (db.py's default): any other names an upstream.
LOCAL_PROVIDER = "local"
RouteKind = Literal["local", "upstream", "burst"]
#: Upstream names are used in URLs (B's webhook path) and in the ``provider`` field.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class Upstream:
    """Anything that speaks Replicate's HTTP API: ``https://api.replicate.com`` or another Overture."""

    name: str
    url: str
    #: Sent as ``Authorization: Bearer``; never logged, never shown (``repr`` hides it).
    token: str | None = None

    def headers(self) -> dict[str, str]:
        """What every request to the upstream carries: the token, when there is one."""
        headers = {"User-Agent": "overture-relay/0.1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def __repr__(self) -> str:
        return f"Upstream(name={self.name!r}, url={self.url!r}, token={'***' if self.token else None})"


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    #: The upstream's name; None for ``local``.
    upstream: str | None = None

    def __str__(self) -> str:
        return self.kind if self.upstream is None else f"{self.kind}:{self.upstream}"


def parse_upstream(name: str, url: str, token: str | None = None) -> Upstream:
    """Raises ``ValueError`` saying what is wrong with the name or the URL."""
    check_name(name)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: expected an http(s) URL such as https://api.replicate.com, got {url!r}")
    if parts.path.rstrip("/").endswith("/v1"):
        raise ValueError(f"{name}: give the API's base URL without /v1 (as REPLICATE_BASE_URL), got {url!r}")
    return Upstream(name, url.rstrip("/"), token or None)


def check_name(name: str) -> None:
    if not name or not set(name) <= _NAME_CHARS or name == "local":
        raise ValueError(f"{name!r} is not an upstream name: use letters, digits, '-', '_' or '.', and not 'local'")


def parse_route(text: str, upstreams: dict[str, Upstream]) -> Route:
    """``local``, ``upstream:NAME`` or ``burst:NAME`` naming a configured upstream."""
    kind, sep, name = text.partition(":")
    if kind == "local" and not sep:
        return Route("local")
    if kind not in ("upstream", "burst") or not name:
        raise ValueError(f"expected local, upstream:NAME or burst:NAME, got {text!r}")
    if name not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none is configured (--upstream NAME=URL)"
        raise ValueError(f"{text!r} names no configured upstream; the upstreams are: {known}")
    return Route(kind, name)  # type: ignore[arg-type]  # checked just above
