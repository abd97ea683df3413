"""Errors whose message is written for the user, and the message a failed prediction shows.

A ``UserError`` says what was wrong and how to fix it, so the API and a failed prediction's
``error`` show its message as it is. Anything else is a fault of the server or the model, shown
with its type name so a bug report names it.

::

    UserError
    ├── InvalidInput        inputs that break a model's schema, one (field, message) per bad one
    ├── InputFileError      a file input that cannot be read or downloaded
    ├── AddressRefused      a host the network policy refuses to connect to
    ├── WebhookRefused      a webhook URL the server will not send to
    ├── UnknownModel        no such model or version
    ├── TooLarge            an upload past the size limit
    ├── CheckpointMissing   weights that cannot be found; says how to provide them
    ├── TooManyQueued       a token at its cap of queued predictions (--max-queued-per-token)
    ├── OverBudget          a token at its spending cap on upstream predictions (--upstream-budget)
    └── SetupFailed         a model whose setup raised

Each also keeps the builtin base that says what kind of problem it is (a bad value, a missing
thing, a failed step), so ``except ValueError`` around code that raises one still catches it.

Not here: ``Canceled`` (models/base.py) is how a canceled prediction unwinds, not an error, and
``QueueClosed`` (engine/workers/queue.py) tells an idle worker to retire.
"""

from __future__ import annotations

import errno
from datetime import datetime

from sqlalchemy.exc import OperationalError


class UserError(Exception):
    """An error whose message is written for the user and shown as it is."""


class InvalidInput(UserError, ValueError):
    """Input that breaks the schema; ``errors`` holds ``(field, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("".join(f"- input.{name}: {message}\n" for name, message in errors))


class InputFileError(UserError, ValueError):
    """A file input that cannot be read."""


class AddressRefused(UserError, ValueError):
    """A connection the policy refuses; the message says why and which option changes that."""


class WebhookRefused(UserError, ValueError):
    """A webhook URL that is malformed or that the address policy refuses."""


class UnknownModel(UserError, LookupError):
    """A model or version this server does not offer."""


class TooLarge(UserError, ValueError):
    """An upload larger than the server accepts."""


class CheckpointMissing(UserError, RuntimeError):
    """Weights that cannot be found; the message says how to provide them."""


class TooManyQueued(UserError, RuntimeError):
    """A create refused: the token has as many predictions waiting as the server allows."""


class OverBudget(UserError, RuntimeError):
    """An upstream prediction refused: the token has spent its budget for the period (a 402)."""

    def __init__(self, limit: float, spent: float, period: str, resets_at: datetime):
        self.limit = limit
        self.spent = spent
        self.period = period
        self.resets_at = resets_at
        super().__init__(
            f"This token has spent an estimated ${spent:.4f} of its ${limit:.2f} budget for upstream predictions "
            f"this {period} (--upstream-budget); it renews at {resets_at:%Y-%m-%d %H:%M} UTC."
        )


class SetupFailed(UserError, RuntimeError):
    """A model's setup raised; the message names the underlying error."""


_FULL_OR_READ_ONLY_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
#: What SQLite says when its files can't be written.
_SQLITE_WRITE_FAILURES = ("disk is full", "readonly database", "disk I/O error")


def storage_problem(exc: BaseException) -> str | None:
    """A message for the user when ``exc`` means the data directory can't be written; else None.

    Such an error can come from anywhere that writes (the store, a model's scratch files), so it
    is recognized by what it is rather than raised as a ``UserError``."""
    if isinstance(exc, OSError) and exc.errno in _FULL_OR_READ_ONLY_ERRNOS:
        reason = exc.strerror or str(exc)
    elif isinstance(exc, OperationalError) and any(s in str(exc.orig) for s in _SQLITE_WRITE_FAILURES):
        reason = str(exc.orig)
    else:
        return None
    return f"The server cannot write to its data directory (it is full or read-only): {reason}"


def prediction_error(exc: BaseException) -> str:
    """The ``error`` of a prediction that ended with ``exc``."""
    storage = storage_problem(exc)
    if storage is not None:
        return storage
    # A model raises ValueError to tell the user what is wrong with the request, as in Cog.
    if isinstance(exc, UserError | ValueError):
        return str(exc)
    # torch.OutOfMemoryError (CUDA) is a RuntimeError: known by name so this module needs no torch.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"The model ran out of memory. {exc}".strip()
    return f"{type(exc).__name__}: {exc}"
