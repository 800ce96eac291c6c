"""A checker for the subset of JSON Schema the drift report's schema uses (no dependency)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def validate(document: Any, schema: Mapping[str, Any], where: str = "$") -> None:
    """
    Fail unless *document* satisfies *schema*, for the JSON Schema keywords ``JSON_SCHEMA`` uses
    (type, const, enum, minimum, maximum, required, properties, additionalProperties: false,
    items).
    """
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": int | float,
        "boolean": bool,
        "null": type(None),
    }
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(document, types[t])
            and not (t in ("integer", "number") and isinstance(document, bool))
            for t in allowed
        )
        assert ok, f"{where}: {document!r} is not {allowed}"
    if "const" in schema:
        assert document == schema["const"], f"{where}: {document!r} != {schema['const']!r}"
    if "enum" in schema:
        assert document in schema["enum"], f"{where}: {document!r} not in {schema['enum']}"
    # As in JSON Schema, the bounds hold for numbers only (``null`` passes them).
    number = isinstance(document, int | float) and not isinstance(document, bool)
    if number and "minimum" in schema:
        assert document >= schema["minimum"], f"{where}: {document!r} below the minimum"
    if number and "maximum" in schema:
        assert document <= schema["maximum"], f"{where}: {document!r} above the maximum"
    if not isinstance(document, dict | list):
        return  # as in JSON Schema, the object and array keywords hold for those only
    for key in schema.get("required", ()):
        assert key in document, f"{where}: no {key!r}"
    properties = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        extra = set(document) - set(properties)
        assert not extra, f"{where}: unexpected {sorted(extra)}"
    for key, sub in properties.items():
        if key in document:
            validate(document[key], sub, f"{where}.{key}")
    if "items" in schema:
        for index, item in enumerate(document):
            validate(item, schema["items"], f"{where}[{index}]")
