"""Reading a declaration: the type and metadata of a field, at a key path or anywhere below
a root. Messages, the JSON Schema framing and the environment variable names use it."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints


@cache
def hints(cls: type) -> dict[str, Any]:
    """A dataclass' fields and their declared types (with their Annotated metadata)."""
    return get_type_hints(cls, include_extras=True)


def strip(tp: Any) -> tuple[Any, list[Any]]:
    """``tp`` without Annotated and without ``| None``, and the metadata taken off."""
    meta: list[Any] = []
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp, *extra = get_args(tp)
            meta.extend(extra)
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp, meta
            tp = rest[0]
        else:
            return tp, meta


def nullable(tp: Any) -> bool:
    """Whether ``null`` is a value of ``tp`` (``Str | None``)."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def declared_at(root: type, loc: Sequence[int | str]) -> tuple[Any, list[Any]]:
    """The declared type at the key path ``loc`` (stripped) and its metadata; ``Any`` below
    what the declaration describes."""
    tp: Any = root
    meta: list[Any] = []
    for part in loc:
        if isinstance(part, str) and dataclasses.is_dataclass(tp) and part in hints(tp):  # type: ignore[arg-type]
            tp, meta = strip(hints(tp)[part])  # type: ignore[arg-type]
        elif isinstance(part, int) and get_origin(tp) in (tuple, list):
            tp, meta = strip(get_args(tp)[0])
        else:
            return Any, []
    return tp, meta


def declared_types(root: type) -> set[Any]:
    """Every type the declaration of ``root`` reaches (fields, items, union members)."""
    seen: set[Any] = set()
    todo: list[Any] = [root]
    while todo:
        tp = strip(todo.pop())[0]
        if tp in seen:
            continue
        seen.add(tp)
        if dataclasses.is_dataclass(tp):
            todo.extend(hints(tp).values())  # type: ignore[arg-type]
        else:
            todo.extend(a for a in get_args(tp) if not isinstance(a, str | int | float | bool))
    return seen
