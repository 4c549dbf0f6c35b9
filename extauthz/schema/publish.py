"""The declared documents as JSON Schema (draft 2020-12), for editors and other tools.

pydantic writes the schema from the same annotations that validate a document; this module
only frames it: ``$schema``, a title, no per-field titles (they repeat the key), and
``null`` allowed wherever the loader reads it as an empty section.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema

from extauthz.schema.declare import Section
from extauthz.schema.introspect import declared_types

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "contains", "propertyNames")


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def json_schema(root: type, *, title: str, description: str, many: bool) -> dict[str, Any]:
    if many:  # one document, or a list of them (a JSON array file)
        body = TypeAdapter(list[root]).json_schema(schema_generator=_Generator)  # type: ignore[valid-type]
        one = body.pop("items")
        body.pop("type")
        body["anyOf"] = [one, {"type": "array", "items": one}]
    else:
        body = TypeAdapter(root).json_schema(schema_generator=_Generator)
    sections = {cls.__name__ for cls in _dataclasses(root) if issubclass(cls, Section)
                and cls is not root}  # a whole document of null is no document
    body = _frame(body, sections)
    body.pop("description", None)
    return {"$schema": DIALECT, "title": title, "description": description, **body}


def _dataclasses(root: type) -> set[type]:
    """Every dataclass the declaration of ``root`` reaches."""
    return {t for t in declared_types(root) if isinstance(t, type) and dataclasses.is_dataclass(t)}


def _frame(node: Any, sections: set[str], *, wrap: bool = False) -> Any:
    """Drop titles (they repeat the key); where a key's value is a section (``wrap``), allow
    ``null`` beside it, as the loader reads ``grpc:`` with nothing under it as defaults."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_LISTS:
            out[key] = [_frame(v, sections) for v in value]
        elif key in _SCHEMA_MAPS:
            out[key] = {k: _frame(v, sections, wrap=key == "properties") for k, v in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = _frame(value, sections)
        elif key != "title":
            out[key] = value
    if wrap and out.get("$ref", "").rsplit("/", 1)[-1] in sections:
        out = {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
    return out
