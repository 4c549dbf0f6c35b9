"""Where a token comes from: ``Authorization: Bearer …``, then the configured cookie."""

from __future__ import annotations

import re

from extauthz.errors import CredentialAmbiguous
from extauthz.request import RequestView

_COOKIE_SEPARATORS = re.compile(r"[;,]")


def bearer_token(authorization: str | None) -> str | None:
    """The token of a ``Bearer`` Authorization header (scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    return token or None


def parse_cookies(cookie_header: str) -> list[tuple[str, str]]:
    """Every ``name=value`` pair of a ``Cookie`` header (RFC 6265 §4.2.1, §5.4), in order,
    names as sent (case-sensitive) and values without their optional double quotes.

    The one cookie parser, for reading credentials and for stripping them. A proxy joins
    several ``Cookie`` lines with ``'; '`` (Envoy) or ``','``, and a cookie-value can hold
    neither (RFC 6265 §4.1.1), so both separate pairs. A piece without ``=`` is kept with
    the name ``""`` (never a credential)."""
    pairs = []
    for piece in _COOKIE_SEPARATORS.split(cookie_header):
        name, sep, value = piece.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            if name:
                pairs.append(("", name))
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        pairs.append((name, value))
    return pairs


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of the credential cookie ``name``, or None. A credential that appears
    twice (a second ``Cookie`` line, a ``,``-joined copy, one planted by a sibling
    subdomain) is refused with ``CredentialAmbiguous``: which one the upstream would read
    is a guess."""
    if not cookie_header or name not in cookie_header:
        return None
    found = [value for key, value in parse_cookies(cookie_header) if key == name]
    if len(found) > 1:
        raise CredentialAmbiguous(f"the cookie {name!r} appears more than once")
    return (found[0] or None) if found else None


def without_cookies(cookie_header: str, names: frozenset[str]) -> str:
    """The ``Cookie`` header less the named cookies (credentials the upstream must not see).

    Pieces are found as ``parse_cookies`` finds them (split at ``;`` and ``,``, names
    stripped), so every copy ``cookie_value`` could read is removed; every other piece is
    kept byte for byte, with its ``,``: an application cookie such as ``prefs=a,b`` or
    ``cart="1 2"`` reaches the upstream as it was sent. Unchanged when nothing is removed."""
    kept: list[str] = []
    removed = False
    for piece in cookie_header.split(";"):
        parts = piece.split(",")
        rest = [p for p in parts if p.partition("=")[0].strip() not in names or "=" not in p]
        if len(rest) != len(parts):
            removed = True
        joined = ",".join(rest).strip()
        if joined:
            kept.append(joined)
    return "; ".join(kept) if removed else cookie_header


def find_token(view: RequestView, cookie_name: str | None) -> str | None:
    """The bearer token, else the token cookie; ``CredentialAmbiguous`` (a TokenError) when
    that cookie appears twice."""
    token = bearer_token(view.headers.get("authorization"))
    if token is None and cookie_name:
        token = cookie_value(view.headers.get("cookie"), cookie_name)
    return token
