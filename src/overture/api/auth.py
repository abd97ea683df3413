"""Bearer (or ``Token``) authentication; each token is an owner who sees only their own records."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from overture.api.errors import ApiError
from overture.api.ratelimit import RateLimiter
from overture.api.signing import check_signed


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


def owner_or_signed(subject: Callable[[dict[str, Any]], str]) -> Callable[..., Awaitable[str | None]]:
    """A dependency for a route that a URL the server signed opens without a token, as Replicate's
    stream and file URLs open: the JavaScript client's ``EventSource``-style stream reader and its
    ``FileOutput`` fetch them with no ``Authorization`` header. ``subject`` names what the signature
    covers, from the path parameters.

    It gives the token's owner, or None for a request that came without a token and whose URL's
    signature the server wrote for this subject. A request with a token is judged by the token alone,
    so another token holding a signed URL still sees only its own records; one with neither is a 401.
    """

    async def dependency(
        request: Request, expires: str | None = Query(default=None), signature: str | None = Query(default=None)
    ) -> str | None:
        if signature is None or "authorization" in request.headers:
            return await authenticate(request)
        check_signed(request.app.state.services.keys, subject(request.path_params), expires or "", signature)
        return None

    return dependency
