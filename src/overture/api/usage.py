"""``GET /v1/usage``: Overture's own extension (Replicate has no such route). What the calling token's
predictions took over a period: their count, ``predict_time`` and estimated cost, grouped by model,
provider and hardware, with the token's budget for upstream predictions (docs/usage.md).

A token sees only its own usage, as it sees only its own predictions: no API token is above the
others. The operator sees every token's with ``overture usage --local``, which reads the database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from overture.api.auth import Owner
from overture.api.deps import Svc
from overture.api.errors import invalid_request
from overture.api.present import timestamp
from overture.engine.usage import DEFAULT_GROUPING, GROUP_FIELDS, UsageReport, parse_moment, period_bounds
from overture.store.store import utcnow

router = APIRouter(prefix="/v1")

_USAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Overture extension: the token's usage and estimated cost (USD) over the period.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["since", "until", "currency", "group_by", "results", "total"],
                    "properties": {
                        "owner": {"type": "string", "description": "The token's name on its records."},
                        "since": {"type": "string", "format": "date-time"},
                        "until": {"type": "string", "format": "date-time"},
                        "currency": {"type": "string", "enum": ["USD"]},
                        "group_by": {"type": "array", "items": {"type": "string", "enum": list(GROUP_FIELDS)}},
                        "results": {"type": "array", "items": {"$ref": "#/components/schemas/UsageLine"}},
                        "total": {"$ref": "#/components/schemas/UsageLine"},
                        "budget": {
                            "type": ["object", "null"],
                            "description": "The token's cap on upstream predictions (--upstream-budget); null: none.",
                            "properties": {
                                "limit": {"type": "number"},
                                "spent": {"type": "number"},
                                "period": {"type": "string", "enum": ["day", "week", "month"]},
                                "resets_at": {"type": "string", "format": "date-time"},
                            },
                        },
                    },
                }
            }
        },
    }
}


_GROUP_BY_HELP = f"Any of {', '.join(GROUP_FIELDS)}, repeated or comma-separated; default: model,provider."


def _moment(value: str | None, name: str) -> datetime | None:
    """``parse_moment``, or a 422 naming the parameter."""
    try:
        return None if value is None else parse_moment(value)
    except ValueError as exc:
        raise invalid_request([(name, str(exc))]) from None


def grouping(values: list[str] | None) -> tuple[str, ...]:
    """``group_by``, repeated or comma-separated; the default grouping when absent."""
    names = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUP_FIELDS]
    if unknown:
        raise invalid_request([("group_by", f"{unknown[0]!r} is not one of {', '.join(GROUP_FIELDS)}")])
    return tuple(dict.fromkeys(names)) if values is not None else DEFAULT_GROUPING


@router.get("/usage", responses=_USAGE_RESPONSE)
def usage(
    owner: Owner,
    svc: Svc,
    since: Annotated[
        str | None, Query(description="ISO-8601; default: the start of the current budget period (UTC).")
    ] = None,
    until: Annotated[str | None, Query(description="ISO-8601, not included; default: now.")] = None,
    group_by: Annotated[list[str] | None, Query(description=_GROUP_BY_HELP)] = None,
) -> dict[str, Any]:
    """Overture extension: the calling token's predictions created in ``[since, until)``, their
    ``predict_time`` and estimated cost per group, and its budget for upstream predictions."""
    by = grouping(group_by)
    now = utcnow()
    budget = svc.engine.budget
    start = _moment(since, "since") or period_bounds(budget.period, now)[0]
    end = _moment(until, "until") or now
    if end < start:
        raise invalid_request([("until", "must not be before since")])
    groups = svc.engine.store.usage(start, end, owner=owner)
    report = UsageReport.of(groups, budget.prices, start, end, by)
    return {"owner": owner, **report.as_json(timestamp), "budget": budget.as_json(owner, timestamp)}
