"""The FastAPI application: Replicate's HTTP API in front of the engine."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response

from overture.api import (
    catalog,
    errors,
    files,
    openapi,
    operations,
    playground,
    predictions,
    stream,
    upstreams,
    usage,
)
from overture.api.auth import Owner, TokenAuth
from overture.api.deps import Present, Services, Svc
from overture.api.limits import BodyLimit
from overture.api.present import Presenter
from overture.api.ratelimit import RateLimiter
from overture.config import Settings
from overture.engine.engine import Engine
from overture.engine.netpolicy import address_policy
from overture.engine.telemetry import Telemetry
from overture.engine.webhooks import WebhookDispatcher, WebhookPolicy
from overture.models.registry import default_registry
from overture.models.weights import log_readiness
from overture.store.secrets import Keys
from overture.store.store import Store


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.data_dir, settings.database_url)
    keys = Keys(settings.data_dir)
    # Webhook bodies are built outside any request, so they use the configured public URL.
    presenter = Presenter(
        settings.public_url or f"http://{settings.host}:{settings.port}",
        keys,
        settings.signed_url_ttl_seconds,
        settings.retention_hours,
    )
    policy = WebhookPolicy(
        retry_seconds=settings.webhook_retry_hours * 3600,
        backoff_seconds=settings.webhook_backoff_seconds,
        addresses=address_policy(settings, "webhook"),
    )
    telemetry = Telemetry() if settings.metrics else None
    webhooks = WebhookDispatcher(store, keys, presenter, policy, telemetry)
    engine = Engine(settings, store, default_registry(settings.model_modules), webhooks, telemetry)
    if not settings.tokens:
        settings.tokens = [keys.generated_token()]
    return Services(settings, engine, keys)


#: A note on a disc, for ``avatar_url``.
_AVATAR = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="32" fill="#24292f"/>'
    '<path d="M26 44V18l16-4v26" fill="none" stroke="#fff" stroke-width="4"/>'
    '<circle cx="21" cy="44" r="6" fill="#fff"/><circle cx="37" cy="40" r="6" fill="#fff"/></svg>'
)


def create_app(settings: Settings) -> FastAPI:
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.engine.start()
        # Looking at the weights on disk takes a moment; the server answers meanwhile.
        threading.Thread(
            target=log_readiness, args=(services.engine.registry, settings.checkpoints), daemon=True
        ).start()
        try:
            yield
        finally:
            services.engine.stop()
            services.engine.store.close()

    app = FastAPI(title="Overture", version="0.1.0", lifespan=lifespan, redirect_slashes=False)
    app.state.services = services
    app.state.auth = TokenAuth(settings.tokens, RateLimiter.from_settings(settings))
    errors.install(app)
    openapi.install(app)
    # Multipart framing adds a little to an upload of the largest allowed size.
    upload_limit = settings.max_upload_bytes + 1024 * 1024
    app.add_middleware(
        BodyLimit,
        limit_for=lambda path: upload_limit if path == "/v1/files" else settings.max_request_bytes,
    )
    app.include_router(predictions.router)
    app.include_router(playground.router)
    app.include_router(catalog.router)
    app.include_router(files.router)
    app.include_router(stream.router)
    app.include_router(usage.router)
    app.include_router(upstreams.router)
    operations.install(app, settings, services.engine.telemetry)

    @app.get("/v1/webhooks/default/secret")
    def webhook_secret(owner: Owner, svc: Svc) -> dict[str, str]:
        return {"key": svc.keys.webhook_secret(owner)}

    @app.get("/v1/account")
    async def account(_: Owner, present: Present) -> dict[str, Any]:
        # No github_url: the document has no null for it, and this account has none.
        return {"type": "user", "username": "overture", "name": "Overture", "avatar_url": f"{present.base}/avatar.svg"}

    @app.get("/avatar.svg", response_class=Response)
    async def avatar() -> Response:
        """The account's picture, without a token: an ``<img src>`` cannot send one."""
        return Response(_AVATAR, media_type="image/svg+xml")

    return app
