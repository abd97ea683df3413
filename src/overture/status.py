"""The states of a prediction, as Replicate's API names them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A prediction's ``status``; members are the strings stored and served, in Cog's order
    (the OpenAPI ``Status`` enum lists them so)."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    FAILED = "failed"


#: Not finished: a cancel or a deadline can still end it.
ACTIVE = (Status.STARTING, Status.PROCESSING)
#: Finished for good: no transition leaves these.
TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)
