"""Bearer (or ``Token``) authentication; each token is an owner who sees only their own records."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from overture.api.errors import ApiError
from overture.api.ratelimit import RateLimiter


def owner_of(token: str) -> str:
    """A stable, non-secret name for a token, stored on its predictions and files."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class TokenAuth:
    """Knows the tokens, and holds each to its rate limits (``limiter``; None: no limits)."""

    def __init__(self, tokens: list[str], limiter: RateLimiter | None = None):
        self._tokens = [(t.encode(), owner_of(t)) for t in tokens]
        self._limiter = limiter

    def __call__(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            raise ApiError(401, "You did not pass an authentication token (Authorization: Bearer <token>)")
        given = token.strip().encode()
        owner = None
        for candidate, name in self._tokens:
            # Compare against every token, in constant time, so timing reveals nothing.
            if hmac.compare_digest(candidate, given):
                owner = name
        if owner is None:
            raise ApiError(401, "You did not pass a valid authentication token")
        if self._limiter is not None:
            self._limiter.admit(owner, request.method, request.scope["path"])
        return owner


async def authenticate(request: Request) -> str:
    # async: it never blocks, and a plain def would cost a thread-pool hand-off per request.
    auth: TokenAuth = request.app.state.auth
    return auth(request)


Owner = Annotated[str, Depends(authenticate)]
