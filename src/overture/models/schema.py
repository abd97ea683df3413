"""Cog-style input declarations: one source for a version's OpenAPI document and its validation.

A model writes its inputs the way a Cog predictor does (``duration: int = Input(default=8, ge=1)``)
and gets the same ``openapi_schema`` Replicate publishes (pydantic-era Cog rules: ``x-order``,
choices as enum components, ``format: uri`` for files, ``default=None`` meaning "optional, no
default") and a validator whose messages name each bad field.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overture.errors import InvalidInput
from overture.status import Status

COG_VERSION = "0.9.4"


class _Required:
    """Sentinel: an ``Input()`` with no default at all is required (``default=None`` is not)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class InputSpec:
    """What a predictor parameter accepts; the arguments mean what they mean in ``cog.Input``."""

    default: Any = REQUIRED
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: tuple[Any, ...] | list[Any] | None = None
    deprecated: bool = False


def Input(
    default: Any = REQUIRED,
    description: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    regex: str | None = None,
    choices: tuple[Any, ...] | list[Any] | None = None,
    deprecated: bool = False,
) -> Any:
    """A parameter's ``InputSpec``, named and typed ``Any`` as ``cog.Input`` is, so that the default in
    ``duration: int = Input(default=8)`` type-checks against the parameter's annotation."""
    return InputSpec(
        default=default,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        max_length=max_length,
        regex=regex,
        choices=choices,
        deprecated=deprecated,
    )


@dataclass(frozen=True)
class Field:
    name: str
    order: int
    kind: type  # str, int, float, bool or Path
    spec: InputSpec
    nullable: bool = False

    @property
    def required(self) -> bool:
        return self.spec.default is REQUIRED

    @property
    def title(self) -> str:
        return " ".join(part.capitalize() for part in self.name.split("_"))


_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "string"}


#: An OpenAPI property's ``(type, format is uri)`` as a field's kind.
_OPENAPI_KINDS: dict[tuple[Any, bool], type] = {
    ("string", False): str,
    ("string", True): Path,
    ("integer", False): int,
    ("number", False): float,
    ("boolean", False): bool,
}


def fields_from_signature(fn: Callable[..., Any]) -> list[Field]:
    """Read ``Input(...)`` parameters from a predictor's ``predict`` signature, in order."""
    hints = typing.get_type_hints(fn)
    fields = []
    # ``self`` and ``ctx`` (the engine's handle for logs, progress and cancel) are not inputs.
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "ctx")]
    for order, param in enumerate(params):
        spec = param.default if isinstance(param.default, InputSpec) else InputSpec(default=param.default)
        if param.default is inspect.Parameter.empty:
            spec = InputSpec()
        kind, nullable = _unwrap_optional(hints.get(param.name))
        if kind not in _JSON_TYPES:
            raise TypeError(f"No input type provided for parameter {param.name!r} (got {kind!r})")
        fields.append(Field(param.name, order, kind, spec, nullable))
    return fields


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return annotation, False


class InputSchema:
    """The declared inputs of one model version."""

    def __init__(self, fields: list[Field]):
        self.fields = fields
        self.by_name = {f.name: f for f in fields}

    @classmethod
    def from_function(cls, fn: Callable[..., Any]) -> InputSchema:
        return cls(fields_from_signature(fn))

    @classmethod
    def from_openapi(cls, document: Mapping[str, Any]) -> InputSchema:
        """The inputs another server's version declares in its OpenAPI document (Cog's layout:
        ``components.schemas.Input``, enums as ``allOf`` references). Fields of kinds this schema
        cannot check (arrays, objects) are left out: validation passes them through untouched."""
        schemas = document.get("components", {}).get("schemas", {})
        declared = schemas.get("Input", {})
        required = set(declared.get("required", []))
        fields: list[Field] = []
        for name, prop in declared.get("properties", {}).items():
            for ref in prop.get("allOf", []):
                prop = {**schemas.get(str(ref.get("$ref", "")).rsplit("/", 1)[-1], {}), **prop}
            kind = _OPENAPI_KINDS.get((prop.get("type"), prop.get("format") == "uri"))
            if kind is None:
                continue
            default = REQUIRED if name in required else prop.get("default")
            spec = InputSpec(
                default=default,
                description=prop.get("description"),
                ge=prop.get("minimum"),
                le=prop.get("maximum"),
                min_length=prop.get("minLength"),
                max_length=prop.get("maxLength"),
                regex=prop.get("pattern"),
                choices=tuple(prop["enum"]) if "enum" in prop else None,
                deprecated=bool(prop.get("deprecated")),
            )
            fields.append(Field(name, int(prop.get("x-order", len(fields))), kind, spec, bool(prop.get("nullable"))))
        return cls(sorted(fields, key=lambda f: f.order))

    # -- OpenAPI -------------------------------------------------------------------------------

    def components(self) -> dict[str, Any]:
        """``Input`` plus one enum component per ``choices`` field, exactly as Cog lays them out."""
        properties: dict[str, Any] = {}
        components: dict[str, Any] = {}
        for f in self.fields:
            prop: dict[str, Any]
            if f.spec.choices is not None:
                enum_type = "integer" if f.kind is int else "string"
                components[f.name] = {
                    "title": f.name,
                    "description": "An enumeration.",
                    "enum": list(f.spec.choices),
                    "type": enum_type,
                }
                prop = {"allOf": [{"$ref": f"#/components/schemas/{f.name}"}]}
            else:
                prop = {"type": _JSON_TYPES[f.kind]}
                if f.kind is Path:
                    prop["format"] = "uri"
                if f.spec.ge is not None:
                    prop["minimum"] = float(f.spec.ge)
                if f.spec.le is not None:
                    prop["maximum"] = float(f.spec.le)
                if f.spec.min_length is not None:
                    prop["minLength"] = f.spec.min_length
                if f.spec.max_length is not None:
                    prop["maxLength"] = f.spec.max_length
                if f.spec.regex is not None:
                    prop["pattern"] = f.spec.regex
                prop["title"] = f.title
            if f.nullable:
                prop["nullable"] = True
            if f.spec.description is not None:
                prop["description"] = f.spec.description
            if f.spec.default is not REQUIRED and f.spec.default is not None:
                prop["default"] = f.spec.default
            if f.spec.deprecated:
                prop["deprecated"] = True
            prop["x-order"] = f.order
            properties[f.name] = prop
        schema: dict[str, Any] = {"type": "object", "title": "Input", "properties": properties}
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        return {"Input": schema, **components}

    # -- validation ----------------------------------------------------------------------------

    def validate(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Apply defaults and check every field; raise ``InvalidInput`` listing each bad one.

        File fields stay as the URL strings the client sent: resolving them to bytes is the
        engine's job, after the prediction is accepted. Unknown keys are ignored, as in Cog, but
        they are stored and shown with the prediction, so one that JSON has no spelling for (NaN,
        a lone surrogate) is refused like a bad field.
        """
        raw = raw or {}
        values: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for f in self.fields:
            value = raw.get(f.name)
            if value is None:
                if f.required:
                    errors.append((f.name, "field required"))
                else:
                    values[f.name] = None if f.spec.default is REQUIRED else f.spec.default
                continue
            try:
                values[f.name] = _check(f, value)
            except ValueError as exc:
                errors.append((f.name, str(exc)))
        for name, value in raw.items():
            if name not in self.by_name:
                problem = _unshowable_name(name) or _unshowable(value)
                if problem is not None:
                    errors.append((_printable(name), problem))
        if errors:
            raise InvalidInput(errors)
        return values


def _check(f: Field, value: Any) -> Any:
    value = _coerce(f.kind, value)
    spec = f.spec
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(repr(c) for c in spec.choices)
        raise ValueError(f"{shown(value)} is not one of the allowed values: {allowed}")
    if spec.ge is not None and value < spec.ge:
        raise ValueError(f"must be greater than or equal to {_num(spec.ge)} (got {shown(value)})")
    if spec.le is not None and value > spec.le:
        raise ValueError(f"must be less than or equal to {_num(spec.le)} (got {shown(value)})")
    if isinstance(value, str) and f.kind is str:
        if spec.min_length is not None and len(value) < spec.min_length:
            raise ValueError(f"must be at least {spec.min_length} characters long")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise ValueError(f"must be at most {spec.max_length} characters long")
        if spec.regex is not None and not re.fullmatch(spec.regex, value):
            raise ValueError(f"does not match the pattern {spec.regex!r}")
    if f.kind is float:
        # Only now: an integer beyond any float still gets the bounds' message when it breaks them.
        try:
            return float(value)
        except OverflowError:
            limit = f"{sys.float_info.max:.2g}"
            raise ValueError(f"must be a number between -{limit} and {limit} (got {shown(value)})") from None
    return value


def _coerce(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` when JSON gave that kind (an integral float is an integer, an integer
    is a number), else ``ValueError``; numbers are left exact for ``_check`` to bound."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"must be a boolean (got {_kind_of(value)})")
    if kind is int or kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be {'an integer' if kind is int else 'a number'} (got {_kind_of(value)})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number (got {shown(value)})")
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"must be an integer (got {value})")
            return int(value)
        return value
    if not isinstance(value, str):
        if kind is Path:
            raise ValueError(_NOT_A_FILE)
        raise ValueError(f"must be a string (got {_kind_of(value)})")
    problem = _unshowable_text(value)
    if problem is not None:
        raise ValueError(problem)
    if kind is Path and not re.match(r"^(https?://|data:)", value, re.IGNORECASE):
        raise ValueError(_NOT_A_FILE)
    return value


_NOT_A_FILE = "must be a file: an http(s) URL, a data: URI or an uploaded file's URL"
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Longer strings and integers are quoted in part: a message need not echo a megabyte back.
_QUOTED_CHARS = 40
_QUOTED_DIGITS = 20


def _unshowable_text(text: str) -> str | None:
    """Why UTF-8, and so a JSON response, cannot carry ``text``; None when it can."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return f"must be valid Unicode text (got a lone surrogate {_printable(found.group())} at index {found.start()})"


def _unshowable_name(name: str) -> str | None:
    problem = _unshowable_text(name)
    return None if problem is None else f"its name {problem}"


def _unshowable(value: Any) -> str | None:
    """Why JSON cannot show ``value`` back as it came (a number that is not finite, text that is
    not Unicode), looking inside arrays and objects; None when it can. Iterative, so nesting as
    deep as the JSON parser allows cannot exhaust the stack."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number (got {shown(value)})"
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"must hold only finite numbers (got {shown(item)})"
        if isinstance(item, str) and (problem := _unshowable_text(item)) is not None:
            return problem
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _printable(text: str) -> str:
    """``text`` with each lone surrogate written as its escape, so that a message can quote it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: Any) -> str:
    """A value as an error message quotes it: NaN and the infinities as JSON spells them, and no more
    than the start of a long string or the length of a huge integer."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value)))
        return str(value) if digits <= _QUOTED_DIGITS else f"an integer of {digits} digits"
    if isinstance(value, str) and len(value) > _QUOTED_CHARS:
        return f"'{repr(value[:_QUOTED_CHARS])[1:-1]}…' ({len(value)} characters)"
    return repr(value) if isinstance(value, str) else str(value)


def _kind_of(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return shown(value)
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def openapi_document(inputs: InputSchema, output: dict[str, Any]) -> dict[str, Any]:
    """The whole Cog-shaped ``openapi_schema`` a version publishes."""
    prediction_request = {
        "type": "object",
        "title": "PredictionRequest",
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "input": {"$ref": "#/components/schemas/Input"},
            "webhook": {"type": "string", "title": "Webhook", "format": "uri", "maxLength": 65536, "minLength": 1},
            "created_at": {"type": "string", "title": "Created At", "format": "date-time"},
            "output_file_prefix": {"type": "string", "title": "Output File Prefix"},
            "webhook_events_filter": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/WebhookEvent"},
                "default": ["start", "output", "logs", "completed"],
            },
        },
    }
    prediction_response = {
        "type": "object",
        "title": "PredictionResponse",
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "logs": {"type": "string", "title": "Logs", "default": ""},
            "error": {"type": "string", "title": "Error"},
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "status": {"$ref": "#/components/schemas/Status"},
            "metrics": {"type": "object", "title": "Metrics"},
            "version": {"type": "string", "title": "Version"},
            "created_at": {"type": "string", "title": "Created At", "format": "date-time"},
            "started_at": {"type": "string", "title": "Started At", "format": "date-time"},
            "completed_at": {"type": "string", "title": "Completed At", "format": "date-time"},
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                **inputs.components(),
                "Output": output,
                "Status": {
                    "enum": [str(status) for status in Status],
                    "type": "string",
                    "title": "Status",
                    "description": "An enumeration.",
                },
                "WebhookEvent": {
                    "enum": ["start", "output", "logs", "completed"],
                    "type": "string",
                    "title": "WebhookEvent",
                    "description": "An enumeration.",
                },
                "PredictionRequest": prediction_request,
                "PredictionResponse": prediction_response,
            }
        },
    }
