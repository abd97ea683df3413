"""Replicate-style ids: 26 lowercase base32 characters, URL-safe and unguessable."""

import base64
import secrets


def new_id() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]
