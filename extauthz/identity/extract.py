"""Where a token comes from: ``Authorization: Bearer …``, then the configured cookie."""

from __future__ import annotations

from extauthz.request import RequestView


def bearer_token(authorization: str | None) -> str | None:
    """The token of a ``Bearer`` Authorization header (scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    return token or None


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` header (Envoy joins several with ',' or '; ')."""
    if not cookie_header:
        return None
    for part in cookie_header.replace(",", ";").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def find_token(view: RequestView, cookie_name: str | None) -> str | None:
    token = bearer_token(view.headers.get("authorization"))
    if token is None and cookie_name:
        token = cookie_value(view.headers.get("cookie"), cookie_name)
    return token
