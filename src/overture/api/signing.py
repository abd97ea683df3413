"""Expiring signed URLs, for what a browser opens without the bearer token: an output in
``<audio src>`` (``signed_output``) and a prediction's page (``urls.web``).

Anyone can call a signed route, so each part of the URL is untrusted text: the HMAC covers the
expiry exactly as it was sent, and the expiry is read as a number only once the HMAC proves the
server wrote it.
"""

from __future__ import annotations

import hmac
import time
import urllib.parse

from overture.api.errors import ApiError
from overture.store.secrets import Keys

#: Digits of a Unix time for the next few billion years; ``int()`` refuses more than 4300.
_EXPIRES_DIGITS = 20


def page_subject(pid: str) -> str:
    """What a prediction page's signature covers; apart from every output's ``<id>/<name>``."""
    return f"page:{pid}"


def stream_subject(pid: str) -> str:
    """What a prediction's ``urls.stream`` signature covers."""
    return f"stream:{pid}"


def signed_query(keys: Keys, subject: str, ttl: int, not_after: int | None = None) -> str:
    """``expires=...&signature=...`` granting ``subject`` for ``ttl`` seconds, and no later than
    ``not_after`` (a Unix time) where that is given."""
    expires = int(time.time()) + ttl
    if not_after is not None:
        expires = min(expires, not_after)
    return urllib.parse.urlencode({"expires": expires, "signature": keys.sign(f"{subject}:{expires}")})


def check_signed(keys: Keys, subject: str, expires: str, signature: str) -> None:
    """Refuse (403) a signature the server did not write for ``subject``, or one past its expiry."""
    expected = keys.sign(f"{subject}:{expires}").encode()
    # Bytes, not str: compare_digest refuses a str with non-ASCII characters (a TypeError, a 500).
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
        raise ApiError(403, "The signature of this URL is not valid")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= _EXPIRES_DIGITS) or int(expires) < time.time():
        raise ApiError(403, "This signed URL has expired; fetch the prediction again for a fresh one")
