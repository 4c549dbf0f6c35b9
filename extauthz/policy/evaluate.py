"""What a matched policy asks of an identity, and the extra headers it adds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.decision import Reason
from extauthz.identity.model import Identity
from extauthz.policy.model import ClaimValue, HeaderTemplate, Requirements

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Unmet:
    reason: str
    description: str
    missing_scopes: tuple[str, ...] = ()


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name (``realm_access.roles``) walks nested objects when no
    claim has the literal name (``https://example.com/roles`` stays literal)."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _same(a: object, b: ClaimValue) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # True is not 1 here
        return type(a) is type(b) and a == b
    return a == b


# Accepted values that are all strings (groups, roles: nearly every policy), as a set: a claim
# string or list of strings is then one hash lookup, not a Python loop (benchmarks/NOTES.md).
# Strings equal only strings, so the set keeps _same's meaning. Keyed by the policy's tuple.
_STRINGS: dict[tuple[ClaimValue, ...], frozenset[str] | None] = {}
_STRINGS_LIMIT = 4096


def _strings(accepted: tuple[ClaimValue, ...]) -> frozenset[str] | None:
    if accepted in _STRINGS:
        return _STRINGS[accepted]
    texts = [a for a in accepted if type(a) is str]
    found = frozenset(texts) if len(texts) == len(accepted) else None
    if len(_STRINGS) >= _STRINGS_LIMIT:
        _STRINGS.clear()
    _STRINGS[accepted] = found
    return found


def _accepts(value: Any, accepted: tuple[ClaimValue, ...]) -> bool:
    if value is _MISSING:
        return False
    strings = _strings(accepted)
    if strings is not None:
        if type(value) is str:
            return value in strings
        if type(value) is list:
            try:
                return not strings.isdisjoint(value)
            except TypeError:  # an object or list inside: compared one by one below
                pass
    if isinstance(value, list):
        return any(_same(v, a) for v in value for a in accepted)
    return any(_same(value, a) for a in accepted)


def unmet(require: Requirements, identity: Identity) -> Unmet | None:
    """The first requirement the identity does not meet, or None."""
    if require.issuers and identity.issuer not in require.issuers:
        return Unmet(Reason.ISSUER_NOT_ALLOWED, "requirement not met: issuers")
    if require.audiences and not require.audiences.intersection(identity.audiences):
        return Unmet(Reason.AUDIENCE_NOT_ALLOWED, "requirement not met: audiences")
    missing = require.scopes and tuple(s for s in require.scopes if s not in identity.scopes)
    if missing:
        return Unmet(Reason.SCOPE_MISSING, f"requirement not met: scope {' '.join(missing)}",
                     missing_scopes=require.scopes)
    for name, accepted in require.claims:
        if not _accepts(claim_value(identity.claims, name), accepted):
            return Unmet(Reason.CLAIM_MISMATCH, f"requirement not met: claims.{name}")
    return None


def _text(value: Any) -> str | None:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        items = [_text(v) for v in value]
        return ",".join(i for i in items if i is not None)
    if isinstance(value, str | int | float):
        return str(value)
    return None  # objects are not header material


def render_headers(templates: tuple[HeaderTemplate, ...], identity: Identity | None
                   ) -> tuple[tuple[str, str], ...]:
    """The policy's extra headers; one whose claim is missing is left out entirely."""
    out = []
    for t in templates:
        pieces = []
        for is_claim, text in t.parts:
            if not is_claim:
                pieces.append(text)
                continue
            value = _text(claim_value(identity.claims, text)) if identity is not None else None
            if value is None:
                break
            pieces.append(value)
        else:
            value = "".join(pieces)
            if "\r" not in value and "\n" not in value and "\0" not in value:
                out.append((t.name, value))
    return tuple(out)
