"""Inputs declared like a Cog predictor become Cog's OpenAPI layout and a strict validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from overture.errors import InvalidInput
from overture.models.schema import Input, InputSchema, openapi_document


def predict(
    self,
    ctx,
    model_version: str = Input(description="Model to use", default="large", choices=["large", "small"]),
    prompt: str = Input(description="A description.", default=None),
    input_audio: Path = Input(description="An audio file.", default=None),
    duration: int = Input(description="Seconds.", default=8),
    continuation_start: int = Input(default=0, ge=0),
    top_p: float = Input(default=0.0),
    steps: int = Input(default=100, choices=[50, 100]),
    required_text: str = Input(description="No default at all."),
) -> Path: ...


SCHEMA = InputSchema.from_function(predict)


def test_cog_layout() -> None:
    doc = openapi_document(SCHEMA, {"type": "string", "format": "uri", "title": "Output"})
    schemas = doc["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert schemas["Input"]["required"] == ["required_text"]
    assert props["model_version"] == {
        "allOf": [{"$ref": "#/components/schemas/model_version"}],
        "description": "Model to use",
        "default": "large",
        "x-order": 0,
    }
    assert schemas["model_version"] == {
        "title": "model_version",
        "description": "An enumeration.",
        "enum": ["large", "small"],
        "type": "string",
    }
    assert schemas["steps"]["type"] == "integer"
    # default=None: optional, and no "default" key at all (pydantic-era Cog).
    assert props["prompt"] == {"type": "string", "title": "Prompt", "description": "A description.", "x-order": 1}
    assert props["input_audio"]["format"] == "uri" and props["input_audio"]["title"] == "Input Audio"
    assert props["continuation_start"]["minimum"] == 0.0
    assert [p["x-order"] for p in props.values()] == list(range(8))
    assert schemas["Output"] == {"type": "string", "format": "uri", "title": "Output"}


def test_defaults_and_unknown_keys() -> None:
    values = SCHEMA.validate({"required_text": "x", "unknown": 1, "prompt": None})
    assert values == {
        "model_version": "large",
        "prompt": None,
        "input_audio": None,
        "duration": 8,
        "continuation_start": 0,
        "top_p": 0.0,
        "steps": 100,
        "required_text": "x",
    }


def test_integral_float_is_an_integer_and_int_is_a_number() -> None:
    values = SCHEMA.validate({"required_text": "x", "duration": 30.0, "top_p": 1})
    assert values["duration"] == 30 and isinstance(values["duration"], int)
    assert values["top_p"] == 1.0 and isinstance(values["top_p"], float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "- input.required_text: field required\n"),
        ({"required_text": "x", "steps": 75}, "- input.steps: 75 is not one of the allowed values: 50, 100\n"),
        ({"required_text": "x", "continuation_start": -1}, "must be greater than or equal to 0"),
        ({"required_text": "x", "input_audio": "/etc/passwd"}, "input.input_audio: must be a file"),
        ({"required_text": "x", "top_p": float("nan")}, "- input.top_p: must be a finite number (got NaN)\n"),
        ({"required_text": "x", "top_p": float("inf")}, "- input.top_p: must be a finite number (got Infinity)\n"),
        (
            {"required_text": "x", "duration": -float("inf")},
            "- input.duration: must be a finite number (got -Infinity)\n",
        ),
        ({"required_text": "x", "top_p": True}, "- input.top_p: must be a number (got boolean)\n"),
        ({"required_text": "x", "duration": 1.5}, "- input.duration: must be an integer (got 1.5)\n"),
        ({"required_text": float("nan")}, "- input.required_text: must be a string (got NaN)\n"),
        (
            {"required_text": "x", "continuation_start": -(10**400)},
            "- input.continuation_start: must be greater than or equal to 0 (got an integer of 401 digits)\n",
        ),
        (
            {"required_text": "x", "top_p": 10**400},
            "- input.top_p: must be a number between -1.8e+308 and 1.8e+308 (got an integer of 401 digits)\n",
        ),
        (
            {"required_text": "x\ud800"},
            "- input.required_text: must be valid Unicode text (got a lone surrogate \\ud800 at index 1)\n",
        ),
        ({"required_text": "x", "other": [float("nan")]}, "- input.other: must hold only finite numbers (got NaN)\n"),
    ],
)
def test_invalid(raw: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        SCHEMA.validate(raw)
    assert message in str(err.value)


def test_unsupported_annotation_is_a_declaration_error() -> None:
    def bad(self, ctx, x: dict = Input(default=None)) -> str: ...

    with pytest.raises(TypeError, match="No input type provided for parameter 'x'"):
        InputSchema.from_function(bad)
