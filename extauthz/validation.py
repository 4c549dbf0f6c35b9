"""A small schema checker for config and policy documents.

Every problem becomes one ``ConfigError`` whose message names the key path, says
what is wrong and how to fix it ("did you mean 'methods'?"). Unknown keys are
errors, never silently ignored: a typo must not weaken a security setting.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extauthz.errors import ConfigError

_KINDS = frozenset({"str", "int", "float", "bool", "list[str]", "section", "list[section]", "any"})


@dataclass(frozen=True)
class Field:
    """One key of a document: its kind, default and limits."""

    kind: str
    default: Any = None
    nullable: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    schema: Mapping[str, Field] = field(default_factory=dict)
    required: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")


Schema = Mapping[str, Field]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def did_you_mean(value: str, choices: Iterable[str], noun: str = "known keys") -> str:
    """``did you mean 'methods'?`` for a close match, else the list of what is known."""
    known = list(choices)
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"{noun}: {', '.join(sorted(known))}"


def _unknown_key(key: object, schema: Schema, where: str, what: str) -> ConfigError:
    name = str(key)
    return ConfigError(f"{what}: unknown key '{_join(where, name)}': {did_you_mean(name, schema)}")


def check_document(doc: object, schema: Schema, *, where: str = "", what: str = "config") -> dict[str, Any]:
    """Validate ``doc`` against ``schema`` and return it with every default filled in."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        place = f"'{where}'" if where else "the document"
        raise ConfigError(f"{what}: {place} must be a mapping of keys, got {_type_name(doc)}")
    for key in doc:
        if key not in schema:
            raise _unknown_key(key, schema, where, what)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        path = _join(where, key)
        if key not in doc:
            if spec.required:
                raise ConfigError(f"{what}: '{path}' is required{_doc_hint(spec)}")
            out[key] = _default(spec, path, what)
            continue
        out[key] = check_value(doc[key], spec, where=path, what=what)
    return out


def _doc_hint(spec: Field) -> str:
    return f" ({spec.doc})" if spec.doc else ""


def _default(spec: Field, path: str, what: str) -> Any:
    if spec.kind == "section" and not spec.nullable:
        return check_document({}, spec.schema, where=path, what=what)
    if isinstance(spec.default, list | tuple):
        return list(spec.default)
    return spec.default


def check_value(value: object, spec: Field, *, where: str, what: str = "config") -> Any:
    """Validate one value; raise a ConfigError naming ``where`` on any problem."""
    if value is None:
        if spec.nullable:
            return None
        if spec.kind == "section":
            return check_document({}, spec.schema, where=where, what=what)
        raise ConfigError(f"{what}: '{where}' must not be null{_doc_hint(spec)}")
    kind = spec.kind
    if kind == "any":
        return value
    if kind == "section":
        return check_document(value, spec.schema, where=where, what=what)
    if kind == "list[section]":
        if not isinstance(value, list):
            raise ConfigError(f"{what}: '{where}' must be a list, got {_type_name(value)}")
        return [
            check_document(item, spec.schema, where=f"{where}[{i}]", what=what)
            for i, item in enumerate(value)
        ]
    if kind == "list[str]":
        if isinstance(value, str):
            raise ConfigError(
                f"{what}: '{where}' must be a list of strings, got a string: write [{value}]"
            )
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{what}: '{where}' must be a list of strings, got {_type_name(value)}")
        for item in value:
            _check_choice(item, spec, where, what)
        return list(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{what}: '{where}' must be true or false, got {_type_name(value)}")
        return value
    if kind in ("int", "float"):
        ok = isinstance(value, int) if kind == "int" else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            noun = "a whole number" if kind == "int" else "a number"
            raise ConfigError(f"{what}: '{where}' must be {noun}, got {_type_name(value)}")
        assert isinstance(value, int | float)
        if spec.minimum is not None and value < spec.minimum:
            raise ConfigError(f"{what}: '{where}' must be at least {spec.minimum:g}, got {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise ConfigError(f"{what}: '{where}' must be at most {spec.maximum:g}, got {value}")
        return float(value) if kind == "float" else value
    if not isinstance(value, str):
        raise ConfigError(f"{what}: '{where}' must be a string, got {_type_name(value)}")
    _check_choice(value, spec, where, what)
    return value


def _check_choice(value: str, spec: Field, where: str, what: str) -> None:
    if spec.choices and value not in spec.choices:
        raise ConfigError(
            f"{what}: '{where}' is {value!r}; choose one of: {', '.join(spec.choices)}"
        )
