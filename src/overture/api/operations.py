"""Routes for operators: ``GET /health`` (Cog's states, no token) and ``GET /metrics`` (Prometheus'
text format, behind an API token or ``--metrics-token``)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from overture.api.auth import TokenAuth
from overture.api.deps import Svc
from overture.config import Settings
from overture.engine.health import HealthStatus
from overture.engine.telemetry import Telemetry


class HealthBody(BaseModel):
    status: HealthStatus
    reason: str | None = Field(description="Why, for a person; null when READY.")


_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus' text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
    401: {"description": "No token, or not an API token nor the metrics token", "content": _PROBLEM},
}


def install(app: FastAPI, settings: Settings, telemetry: Telemetry | None) -> None:
    # A plain def: it checks that the database takes writes, which blocks.
    @app.get("/health")
    def health(svc: Svc) -> HealthBody:
        """The server's state in Cog's terms; always 200, as Cog's health check (docs/operations.md)."""
        state = svc.engine.health()
        return HealthBody(status=state.status, reason=state.reason)

    if telemetry is None:
        return  # --no-metrics: no route, and nothing counted
    scraper = TokenAuth([*settings.tokens, *([settings.metrics_token] if settings.metrics_token else [])])

    async def authenticate(request: Request) -> str:
        return scraper(request)

    @app.get(
        "/metrics",
        response_class=Response,
        dependencies=[Depends(authenticate)],
        responses=_METRICS_RESPONSES,
        openapi_extra={"security": [{"bearer": []}]},
    )
    def metrics() -> Response:
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
