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
    "402": "Overture extension: a create that would go upstream, refused because the token has spent its budget "
    "for the period (--upstream-budget)",
    "403": "Invalid or expired signature",
    "404": "No such record, route or file (or one of another token's)",
    "413": "The request body is larger than the server's limit",
    "422": "Invalid input, parameter or body",
    "429": "Over the token's rate limit (``Retry-After`` says when to try again), or a create past its cap of "
    "queued predictions",
    "507": "The data directory is full or read-only",
}

#: Routes that want the bearer token, and those signed instead (outputs and ``urls.web``'s pages).
_WITH_TOKEN = "/v1/"
_SIGNED = ("/signed/", "/p/")

#: Replicate's prediction object is not restated here; these are the properties Overture adds to it.
_PREDICTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "description": "A prediction as Replicate's API shows it, with Overture's extensions listed here.",
    "properties": {
        "queue_position": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "Overture extension: while the prediction waits to start, its place in its model's queue "
            "(1 starts next), as the model's worker last reported it; absent once it has started. The last line of "
            "`logs` says the same, with an estimated start from the model's recent run times.",
        },
        "signed_output": {
            "description": "Overture extension: `output` with URLs signed to work without the token, until they expire."
        },
    },
}
#: One group of ``GET /v1/usage`` (Overture extension): the group's keys, then its figures.
_USAGE_LINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "description": "Overture extension: the group's keys (those of `group_by`), then its figures.",
    "required": ["predictions", "predict_time", "cost", "unpriced"],
    "properties": {
        "model": {"type": "string"},
        "provider": {"type": "string", "description": '"local", or the upstream it was relayed to'},
        "owner": {"type": "string"},
        "hardware": {"type": ["string", "null"]},
        "predictions": {"type": "integer", "description": "Predictions created in the period"},
        "predict_time": {"type": "number", "description": "Seconds they ran, as their provider reported"},
        "cost": {"type": "number", "description": "Estimated cost in USD, from the server's price table"},
        "unpriced": {"type": "integer", "description": "Predictions that ran and that no price covers"},
    },
}
#: Where a prediction is created (with POST): the routes that may refuse one with a 402.
_CREATE_ROUTES = (
    "/v1/predictions",
    "/v1/models/{model_owner}/{model_name}/predictions",
    "/v1/deployments/{deployment_owner}/{deployment_name}/predictions",
)
_PREDICTION_ROUTES = (
    *_CREATE_ROUTES,
    "/v1/predictions/{prediction_id}",
    "/v1/predictions/{prediction_id}/cancel",
)
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds until the rate limit admits the request", "schema": {"type": "integer"}}
}

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
    components["schemas"]["Prediction"] = _PREDICTION_SCHEMA
    components["schemas"]["UsageLine"] = _USAGE_LINE_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in spec["paths"].items():
        signed = path.startswith(_SIGNED)
        if not (path.startswith(_WITH_TOKEN) or signed):
            continue
        for method, op in operations.items():
            responses = op["responses"]
            # Any request may fail validation, and any path may name nothing (an unknown route is a 404 too).
            codes = ["403" if signed else "401", "404", "422"] + ([] if signed else ["429"])
            # A /v1 route that a signed URL opens without the token (outputs, streams) may refuse either.
            if not signed and any(p["name"] == "signature" for p in op.get("parameters", [])):
                codes.append("403")
            if method == "post":
                codes += ["400", "413"]
            if method == "post" and path in _CREATE_ROUTES:
                codes.append("402")
            if method in ("post", "delete"):
                codes.append("507")
            for code in codes:
                responses[code] = _problem(_ERRORS[code])
            if "429" in responses:
                responses["429"]["headers"] = _RETRY_AFTER
            if path in _PREDICTION_ROUTES and not (path == "/v1/predictions" and method == "get"):
                ok = responses.get("201") or responses["200"]
                ok["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/Prediction"}
            if not signed:
                op["security"] = [{"bearer": []}]
            if path == "/v1/files" and method == "post":
                op["requestBody"] = _UPLOAD_BODY
            elif path.endswith("/download") or "/outputs/" in path:
                responses["200"]["content"] = _BINARY
            elif path.endswith("/stream"):
                responses["200"]["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
    return spec
