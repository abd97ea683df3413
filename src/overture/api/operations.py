"""Routes for operators: ``GET /health`` (Cog's states, no token) and ``GET /metrics`` (Prometheus'
text format, behind an API token or ``--metrics-token``)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from overture.api.auth import TokenAuth
from overture.api.deps import Svc
from overture.config import Settings
from overture.engine.telemetry import Telemetry


def install(app: FastAPI, settings: Settings, telemetry: Telemetry | None) -> None:
    @app.get("/health")
    def health(svc: Svc) -> dict[str, Any]:
        """Always 200, as Cog's health check: ``status`` says the state, ``reason`` why.

        A plain ``def``: it checks that the database takes writes, which blocks."""
        state = svc.engine.health()
        return {"status": state.status, "reason": state.reason}

    if telemetry is None:
        return  # --no-metrics: no route, and nothing counted
    scraper = TokenAuth([*settings.tokens, *([settings.metrics_token] if settings.metrics_token else [])])

    async def authenticate(request: Request) -> str:
        return scraper(request)

    @app.get("/metrics", response_class=Response, dependencies=[Depends(authenticate)])
    def metrics() -> Response:
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
