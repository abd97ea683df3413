"""The server's own ``/openapi.json``, with what FastAPI cannot infer from the routes: the problem
bodies of every error, the bearer scheme, the multipart upload and the non-JSON responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "detail", "status"],
    "properties": {
        "title": {"type": "string"},
        "detail": {"type": "string"},
        "status": {"type": "integer"},
        "invalid_fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_ERRORS = {
    "400": "The body could not be parsed (not UTF-8, broken framing)",
    "401": "Missing, malformed or unknown token",
    "403": "Invalid or expired signature",
    "404": "No such record, route or file (or one of another token's)",
    "413": "The request body is larger than the server's limit",
    "422": "Invalid input, parameter or body",
    "507": "The data directory is full or read-only",
}

#: Routes that want the bearer token, and those signed instead (outputs and ``urls.web``'s pages).
_WITH_TOKEN = "/v1/"
_SIGNED = ("/signed/", "/p/")

_BINARY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}

#: One server-sent event (schema tools validate each event of the stream against this).
_SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["output", "logs", "error", "done"]},
        "data": {"type": "string"},
        "id": {"type": "string"},
    },
}

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["content"],
                "properties": {
                    "content": {"type": "string", "format": "binary"},
                    "metadata": {"type": "string", "description": "A JSON object"},
                },
            }
        }
    },
}


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(get_openapi(title=app.title, version=app.version, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """Add to FastAPI's document, in place, what every route with a token or a signature may answer."""
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in spec["paths"].items():
        signed = path.startswith(_SIGNED)
        if not (path.startswith(_WITH_TOKEN) or signed):
            continue
        for method, op in operations.items():
            responses = op["responses"]
            # Any request may fail validation, and any path may name nothing (an unknown route is a 404 too).
            codes = ["403" if signed else "401", "404", "422"]
            # A /v1 route that a signed URL opens without the token (outputs, streams) may refuse either.
            if not signed and any(p["name"] == "signature" for p in op.get("parameters", [])):
                codes.append("403")
            if method == "post":
                codes += ["400", "413"]
            if method in ("post", "delete"):
                codes.append("507")
            for code in codes:
                responses[code] = _problem(_ERRORS[code])
            if not signed:
                op["security"] = [{"bearer": []}]
            if path == "/v1/files" and method == "post":
                op["requestBody"] = _UPLOAD_BODY
            elif path.endswith("/download") or "/outputs/" in path:
                responses["200"]["content"] = _BINARY
            elif path.endswith("/stream"):
                responses["200"]["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
    return spec
