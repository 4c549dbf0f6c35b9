"""JSON as JOSE documents need it: one meaning, whoever parses it.

Python's ``json`` accepts ``NaN`` and ``Infinity`` (an ``exp: NaN`` never expires, since every
comparison with NaN is false), turns ``1e400`` into infinity, keeps the last of two members with
the same name (another parser may keep the first), and lets ``"\\ud800"`` through as a lone
surrogate. Each of those is refused here, following I-JSON (RFC 7493): UTF-8 only, no duplicate
member names, no unpaired surrogates, only finite numbers. Large integers are kept exactly (some
IdPs put 64-bit ids in claims); the time claims have their own range check in the verifier.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn


class NotIJSON(ValueError):
    """Valid to Python's ``json``, but not I-JSON; ``problem`` is a phrase fit to show."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _constant(_name: str) -> NoReturn:
    raise NotIJSON("is not standard JSON (NaN or Infinity)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotIJSON("has a number out of range")
    return value


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise NotIJSON("has a duplicate member name")
    for name, _ in pairs:
        _check_string(name)
    return obj


def _check_string(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise NotIJSON("has a string that is not valid Unicode (a lone surrogate)") from e


def _check_strings(value: object) -> None:
    """Member names are checked as objects are built; string values are checked here."""
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_strings(item)


def loads(data: bytes) -> Any:
    """Parse one I-JSON text; NotIJSON for what Python would accept but I-JSON does not,
    ValueError (or UnicodeDecodeError, RecursionError) for what is not JSON at all."""
    text = data.decode("utf-8")  # strict: no UTF-16/32 guessing, no invalid bytes
    value = json.loads(text, parse_constant=_constant, parse_float=_finite,
                       object_pairs_hook=_members)
    _check_strings(value)
    return value
