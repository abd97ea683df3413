"""Keys kept in the data directory, readable only by the server's user (mode 0600)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path


def read_or_create(path: Path, make: str) -> str:
    """Return the key stored at ``path``, creating it with ``make`` (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make + "\n")
    return make


class Keys:
    """The generated API token (when none is configured) and the server's signing key."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.signing_key = read_or_create(data_dir / "signing.key", secrets.token_hex(32)).encode()

    def generated_token(self) -> str:
        return read_or_create(self.data_dir / "api-token", "r8_" + secrets.token_urlsafe(30))

    def sign(self, message: str) -> str:
        # surrogatepass: a message built from a request's text may hold lone surrogates.
        return hmac.new(self.signing_key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def webhook_secret(self, owner: str) -> str:
        """One ``whsec_`` secret per token owner, derived so it needs no storage of its own.

        Standard (not URL-safe) base64: the client splits the key on ``_``.
        """
        digest = hmac.new(self.signing_key, f"webhook:{owner}".encode(), hashlib.sha256).digest()
        return "whsec_" + base64.b64encode(digest).decode()
