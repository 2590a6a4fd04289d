"""Schemas and helpers shared by the test files (imported as `from client_helpers import ...`)."""

import json

import jsonschema
import pytest

# Seconds before any client gives up on a request (no client retries anywhere).
CLIENT_TIMEOUT = 120
# A key the SDKs accept when the server needs none (they refuse an empty key).
NO_KEY = "no-key-needed"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        # Bounded: the random model's text would otherwise fill the token budget inside a string.
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}

CHALLENGE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 12},
        "category": {"type": "string", "enum": ["ZERO_WASTE", "PLOGGING", "VEGAN"]},
        "points": {"type": "integer", "minimum": 0, "maximum": 100},
        "done": {"type": "boolean"},
    },
    "required": ["title", "category", "points", "done"],
    "additionalProperties": False,
}


def pick_stop(text):
    """Three non-space characters from the middle of `text`, first seen at index >= 2 right after
    a non-space character (so the cut is not next to whitespace a server might trim), and where
    it is first seen: a stop string that cuts `text` there. None when `text` has none."""
    middle = len(text) // 2
    for start in list(range(middle, len(text) - 3)) + list(range(middle - 1, 1, -1)):
        candidate = text[start : start + 3]
        if any(c.isspace() for c in candidate) or "\ufffd" in candidate:
            continue
        at = text.find(candidate)
        if at >= 2 and not text[at - 1].isspace():
            return candidate, at
    return None


def parse_json(text, flow):
    """`text` as JSON, or a failure that names the flow."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        pytest.fail(f"{flow}: not JSON ({err}): {text!r}")


def validate(value, schema, flow):
    """Fails, naming the flow, unless `value` is valid for `schema`."""
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as err:
        pytest.fail(f"{flow}: {err.message} in {value!r}")
