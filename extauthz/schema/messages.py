"""A pydantic ValidationError as the one line an operator reads.

The line names the key path (``issuers[0].audiences``), says what is wrong and how to fix it
(``unknown key 'match.methdos': did you mean 'methods'?``). Of several problems the first
unknown key is named (a typo explains the rest: a misspelt required key is also "missing"),
else the first problem in declaration order. The declaration itself is read for what a
message needs: the known keys, a field's description, the choices of a Literal.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from typing import Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from extauthz.schema.introspect import declared_at, strip

_UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
_MISSING = frozenset({"missing", "missing_argument", "missing_keyword_only_argument"})
_NOT_MAPPING = frozenset({"dataclass_type", "dataclass_args_type", "model_type", "dict_type",
                          "model_attributes_type"})
_NOUNS = {"int_type": "a whole number", "int_parsing": "a whole number",
          "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
          "bool_type": "true or false", "bool_parsing": "true or false",
          "string_type": "a string"}


class Hint:
    """Field metadata: what to write instead, said after a value that fails the field's
    ``pattern`` (``'id' is 'Admin_API': use lower-case letters, …``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def did_you_mean(value: str, choices: Iterable[str], noun: str = "known keys") -> str:
    """``did you mean 'methods'?`` for a close match, else the list of what is known."""
    known = list(choices)
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"{noun}: {', '.join(sorted(known))}"


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def one_line(error: ValidationError, root: type, what: str) -> str:
    details = error.errors(include_url=False)
    first = min(range(len(details)), key=lambda i: (details[i]["type"] not in _UNKNOWN, i))
    message = f"{what}: {_describe(details[first], root)}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)  # one line


def key_path(loc: Sequence[int | str]) -> str:
    """``('issuers', 0, 'audiences')`` as ``issuers[0].audiences``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(err: ErrorDetails, root: type) -> str:
    kind, loc, value = err["type"], tuple(err["loc"]), err["input"]
    path = key_path(loc)
    if kind in _UNKNOWN:
        parent = declared_at(root, loc[:-1])[0]
        known = [f.name for f in dataclasses.fields(parent)] if dataclasses.is_dataclass(parent) else []
        return f"unknown key '{path}': {did_you_mean(str(loc[-1]), known)}"
    declared, meta = declared_at(root, loc)
    about = next((m.description for m in meta if isinstance(m, FieldInfo) and m.description), "")
    about = f" ({about})" if about else ""
    if kind in _MISSING:
        return f"'{path}' is required{about}"
    if value is None:
        return f"'{path}' must not be null"
    if kind in _NOT_MAPPING:
        where = f"'{path}'" if path else "the document"
        return f"{where} must be a mapping of keys, got {type_name(value)}"
    if kind in ("list_type", "tuple_type"):
        item = strip(get_args(declared)[0])[0] if get_args(declared) else None
        if get_origin(item) is Literal and all(isinstance(a, str) for a in get_args(item)):
            item = str  # a list of choices is written as a list of strings
        if item is str and isinstance(value, str):
            return f"'{path}' must be a list of strings, got a string: write [{value}]"
        noun = "a list of strings" if item is str else "a list"
        return f"'{path}' must be {noun}, got {type_name(value)}"
    if kind == "literal_error":
        if not isinstance(value, str):
            return f"'{path}' must be a string, got {type_name(value)}"
        where = key_path(loc[:-1]) if loc and isinstance(loc[-1], int) else path
        return f"'{where}' is {value!r}; choose one of: {', '.join(get_args(declared))}"
    if kind == "finite_number":
        return f"'{path}' must be a finite number, got {value}"
    if kind in _NOUNS:
        return f"'{path}' must be {_NOUNS[kind]}, got {type_name(value)}"
    ctx = err.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"'{path}' must be at least {_number(ctx['ge'])}, got {value}"
    if kind == "less_than_equal":
        return f"'{path}' must be at most {_number(ctx['le'])}, got {value}"
    if kind == "string_pattern_mismatch":
        hint = next((m.text for m in meta if isinstance(m, Hint)), "")
        return f"'{path}' is {value!r}: {hint or 'write ' + str(ctx.get('pattern'))}"
    return f"'{path}': {' '.join(err['msg'].split())}"


def _number(value: object) -> str:
    return format(value, "g") if isinstance(value, int | float) else str(value)


def yaml_problem(error: Exception) -> str:
    """A YAML parser's error in one line: what, and where (PyYAML's own text spans lines)."""
    mark = _mark(error)
    where = f" (line {mark[0]}, column {mark[1]})" if mark is not None else ""
    return _yaml_what(error) + where


def yaml_error_line(source: str, error: Exception, what: str) -> str:
    """``FILE:LINE:COLUMN: WHAT: problem``, the one line a compiler or an editor's problem
    matcher prints for a syntax error (``FILE: WHAT: problem`` when the parser names no place)."""
    mark = _mark(error)
    where = f"{source}:{mark[0]}:{mark[1]}" if mark is not None else source
    return f"{where}: {what}: {_yaml_what(error)}"


def utf8_error_line(source: str, error: UnicodeDecodeError) -> str:
    """``FILE:LINE:COLUMN: not UTF-8 text …`` for a file that is not UTF-8 (YAML files are)."""
    before = error.object[:error.start]
    line = before.count(b"\n") + 1
    column = error.start - (before.rfind(b"\n") + 1) + 1
    return (f"{source}:{line}:{column}: not UTF-8 text (byte 0x{error.object[error.start]:02x}); "
            "save the file as UTF-8")


def _mark(error: Exception) -> tuple[int, int] | None:
    """(line, column), counted from 1, of a PyYAML error; None when it has no place."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is None or not getattr(error, "problem", None):
        return None
    return mark.line + 1, mark.column + 1


def _yaml_what(error: Exception) -> str:
    problem = getattr(error, "problem", None)
    if not problem:
        return " ".join(str(error).split())
    context = getattr(error, "context", None)
    text = " ".join(f"{context + ': ' if context else ''}{problem}".split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)  # one line
