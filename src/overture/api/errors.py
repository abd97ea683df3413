"""Every error is an RFC 7807 problem object: the client reads ``title`` and ``detail`` from it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from overture.errors import InvalidInput, OverBudget, TooManyQueued, storage_problem

log = logging.getLogger("overture")

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    507: "Insufficient storage",
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"title": _TITLES.get(status, "Error"), "detail": detail, "status": status, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def invalid_input(exc: InvalidInput) -> JSONResponse:
    return _answer(invalid_request([], exc.errors))


def invalid_request(errors: list[tuple[str, str]], inputs: list[tuple[str, str]] | None = None) -> ApiError:
    """A 422 for fields of the request itself (body, query, headers), named as the client sent
    them, and for the model's ``inputs``, which ``detail`` names ``input.<name>`` as Cog does."""
    inputs = inputs or []
    lines = errors + [(f"input.{name}", message) for name, message in inputs]
    detail = "".join(f"- {name}: {message}\n" for name, message in lines)
    fields = [{"field": name, "message": message} for name, message in errors + inputs]
    return ApiError(422, detail, invalid_fields=fields)


def _answer(exc: ApiError) -> JSONResponse:
    return problem(exc.status, exc.detail, exc.headers, **exc.extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc)

    @app.exception_handler(InvalidInput)
    async def _invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        return invalid_input(exc)

    @app.exception_handler(TooManyQueued)
    async def _too_many_queued(_: Request, exc: TooManyQueued) -> JSONResponse:
        return problem(429, str(exc))

    @app.exception_handler(OverBudget)
    async def _over_budget(_: Request, exc: OverBudget) -> JSONResponse:
        resets_at = f"{exc.resets_at:%Y-%m-%dT%H:%M:%SZ}"
        spent = round(exc.spent, 6)
        return problem(402, str(exc), budget=exc.limit, spent=spent, period=exc.period, resets_at=resets_at)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "The requested resource does not exist"
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path", "header")]
            if err.get("type") == "json_invalid":
                errors.append(("body", "the request body is not valid JSON"))
            else:
                errors.append((".".join(loc) or "body", err.get("msg", "invalid")))
        # Every field FastAPI validates is the request's own: the model's inputs are checked later.
        return _answer(invalid_request(errors))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return problem(500, f"The server failed unexpectedly: {type(exc).__name__}")

    # Handled here rather than as a 500, which closes the connection after answering.
    @app.exception_handler(OSError)
    @app.exception_handler(OperationalError)
    async def _storage_error(_: Request, exc: Exception) -> JSONResponse:
        storage = storage_problem(exc)
        if storage is None:
            raise exc
        log.warning("%s", storage)
        return problem(507, storage)
