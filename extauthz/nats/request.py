"""The server's authorization request (nats-server ``server/auth_callout.go``), parsed strictly.

The request is a NATS JWT (``jwt.py``) signed by the server's own nkey: ``iss`` is the
server's public key and equals ``nats.server_id.id``, which the answer's ``aud`` must name;
``aud`` is ``nats-authorization-request``; ``sub`` is the callout's issuer account;
``exp`` is the server's auth deadline; ``nats.type`` is ``authorization_request`` (v2);
``nats.user_nkey`` is the one-time user key the answer is for. Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.nats.jwt import NatsJwtError, decode
from extauthz.nats.nkey import Kind, is_public

AUDIENCE = "nats-authorization-request"
REQUEST_TYPE = "authorization_request"
LEEWAY = 5  # seconds of clock skew between the server and us


class BadAuthRequest(ValueError):
    """Not an authorization request we answer; the message says why, never its values."""


class UnknownServer(BadAuthRequest):
    """Signed by a server key not in ``nats.server_keys``; ``key`` is that key (for the log)."""

    def __init__(self, key: str) -> None:
        super().__init__("the signer is not one of nats.server_keys")
        self.key = key


@dataclass(frozen=True)
class AuthRequest:
    server_id: str  # the server's public nkey: the answer's aud
    server_name: str
    user_nkey: str  # the answer's sub, and the user JWT's
    client_host: str
    client_id: int
    client_kind: str
    auth_token: str | None
    user: str | None
    password: str | None
    client_name: str
    expires: int


def _str(where: Mapping[str, Any], key: str, what: str) -> str:
    value = where.get(key, "")
    if not isinstance(value, str):
        raise BadAuthRequest(f"{what} is not a string")
    return value


def _obj(where: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = where.get(key, {})
    if not isinstance(value, dict):
        raise BadAuthRequest(f"'{key}' is not an object")
    return value


def parse_request(token: str, *, issuer: str, now: float,
                  server_keys: frozenset[str] = frozenset()) -> AuthRequest:
    """The request in ``token``, if a server signed it for ``issuer`` (the callout's
    account public key) and it has not expired; with ``server_keys``, if one of them signed it."""
    try:
        claims = decode(token, Kind.SERVER)
    except NatsJwtError as e:
        raise BadAuthRequest(f"not a server-signed NATS JWT: {e}") from e
    nats = _obj(claims, "nats")
    server = _obj(nats, "server_id")
    if claims.get("aud") != AUDIENCE:
        raise BadAuthRequest(f"'aud' is not {AUDIENCE!r}")
    version = nats.get("version")
    if nats.get("type") != REQUEST_TYPE or type(version) is not int or version != 2:  # not 2.0
        raise BadAuthRequest(f"'nats.type' is not {REQUEST_TYPE!r} version 2")
    if server_keys and claims["iss"] not in server_keys:
        raise UnknownServer(str(claims["iss"]))
    if server.get("id") != claims["iss"]:
        raise BadAuthRequest("the signer is not the server the request names (nats.server_id.id)")
    if claims.get("sub") != issuer:
        raise BadAuthRequest("'sub' is not this callout's issuer account")
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, int) or expires <= 0:
        raise BadAuthRequest("'exp' is not a time")
    if now > expires + LEEWAY:
        raise BadAuthRequest("the request has expired")
    user_nkey = _str(nats, "user_nkey", "'nats.user_nkey'")
    if not is_public(user_nkey, Kind.USER):
        raise BadAuthRequest("'nats.user_nkey' is not a user public nkey")
    client, opts = _obj(nats, "client_info"), _obj(nats, "connect_opts")
    cid = client.get("id", 0)
    if isinstance(cid, bool) or not isinstance(cid, int):
        raise BadAuthRequest("'nats.client_info.id' is not a number")
    return AuthRequest(
        server_id=claims["iss"], server_name=_str(server, "name", "'nats.server_id.name'"),
        user_nkey=user_nkey, client_host=_str(client, "host", "'nats.client_info.host'"),
        client_id=cid, client_kind=_str(client, "kind", "'nats.client_info.kind'"),
        auth_token=_str(opts, "auth_token", "'nats.connect_opts.auth_token'") or None,
        user=_str(opts, "user", "'nats.connect_opts.user'") or None,
        password=_str(opts, "pass", "'nats.connect_opts.pass'") or None,
        client_name=_str(opts, "name", "'nats.connect_opts.name'"),
        expires=expires,
    )
