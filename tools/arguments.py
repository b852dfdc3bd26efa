"""Checking model-given arguments against a tool's JSON schema, cheaply and with messages a model can act on.

Only the part of JSON Schema our tools use: an object with typed properties,
`required`, `enum` and typed array `items`. Open models often send numbers,
booleans and lists as JSON text ("10", "[1, 20]"); a string that decodes to
the expected type is accepted, anything else is reported with the parameter
name and the expected type.
"""
from __future__ import annotations

import json
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def describe(value: Any) -> str:
    """A short JSON rendering of a wrong value for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _conforms(value: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    if isinstance(value, bool) and kind != "boolean":
        return False  # JSON true is not the number 1
    return isinstance(value, _TYPES.get(kind, (object,)))


def _coerce(value: Any, kind: str) -> tuple[bool, Any]:
    """(ok, value) with JSON-text strings decoded and integral floats made ints."""
    if kind != "string" and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False, value
    if not _conforms(value, kind):
        return False, value
    if kind == "integer":
        value = int(value)
    return True, value


def _check(name: str, value: Any, spec: dict) -> tuple[str | None, Any]:
    kind = spec.get("type")
    if kind:
        ok, value = _coerce(value, kind)
        if not ok:
            return f"Parameter `{name}` must be {_article(kind)} {kind}, got {describe(value)}.", value
    if "enum" in spec and value not in spec["enum"]:
        allowed = ", ".join(json.dumps(v) for v in spec["enum"])
        return f"Parameter `{name}` must be one of {allowed}; got {describe(value)}.", value
    items = spec.get("items", {}).get("type") if kind == "array" else None
    if items:
        checked = []
        for index, item in enumerate(value):
            ok, item = _coerce(item, items)
            if not ok:
                return f"Parameter `{name}` must be a list of {items}s; item {index} is {describe(item)}.", value
            checked.append(item)
        value = checked
    return None, value


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def validate(tool: str, arguments: Any, schema: dict) -> tuple[str | None, dict]:
    """(error message or None, arguments with accepted coercions applied)."""
    properties: dict = schema.get("properties", {})
    expected = ", ".join(f"`{name}` ({spec.get('type', 'any')})" for name, spec in properties.items())
    if not isinstance(arguments, dict):
        return f"The arguments of `{tool}` must be a JSON object with {expected}; got {describe(arguments)}.", {}
    for name in schema.get("required", []):
        if arguments.get(name) is None:
            kind = properties.get(name, {}).get("type", "any")
            return f"Missing required parameter `{name}` ({kind}) for tool `{tool}`.", arguments
    unknown = [key for key in arguments if key not in properties]
    if unknown:
        return f"Unknown parameter `{unknown[0]}` for tool `{tool}`; it takes {expected}.", arguments
    clean = {}
    for name, value in arguments.items():
        if value is None:
            continue  # an explicit null means "not given"
        error, clean[name] = _check(name, value, properties[name])
        if error:
            return error, arguments
    return None, clean
