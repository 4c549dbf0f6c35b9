"""The answer to an authorization request: a user JWT inside a signed authorization response.

Both are NATS JWTs signed by the issuer account key (``auth_callout.issuer``), laid out as
nats-io/jwt v2 writes ``UserClaims`` and ``AuthorizationResponseClaims``. The response's
``sub`` is the request's one-time ``user_nkey`` and its ``aud`` the server's id; the user
JWT's ``sub`` is the same ``user_nkey``, its ``aud`` the account the user is placed in
(config mode), its ``name`` the username (NATS logs and ``connz`` show it) and its ``exp``
the token's, so the server disconnects the client when the token expires.

NATS reads an empty allow list as "everything": a side whose allow list is empty is sent as
``deny: [">"]`` instead, so a policy grants exactly what it lists.
"""

from __future__ import annotations

from typing import Any

from extauthz.nats.jwt import encode
from extauthz.nats.nkey import SigningPair
from extauthz.nats.request import AuthRequest
from extauthz.policy.model import NatsPermissions

RESPONSE_TYPE = "authorization_response"
NO_LIMIT = -1
_EVERYTHING = ">"


def _side(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    if not allow:
        return {"deny": [_EVERYTHING]}
    side: dict[str, list[str]] = {"allow": list(allow)}
    if deny:
        side["deny"] = list(deny)
    return side


def permissions(grant: NatsPermissions) -> dict[str, dict[str, list[str]]]:
    """A grant as the user JWT carries it (``pub``, ``sub``)."""
    return {"pub": _side(grant.publish_allow, grant.publish_deny),
            "sub": _side(grant.subscribe_allow, grant.subscribe_deny)}


def user_claims(request: AuthRequest, grant: NatsPermissions, *, account: str, name: str,
                expires: int) -> dict[str, Any]:
    """The user JWT's claims (``UserClaims``): ``sub``, ``aud``, ``name``, ``exp``, the
    permissions and no limits (``NewUserClaims``' ``-1``s)."""
    return {
        "aud": account, "exp": expires, "name": name, "sub": request.user_nkey,
        "nats": {
            **permissions(grant),
            "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
            "type": "user", "version": 2,
        },
    }


def response(request: AuthRequest, signer: SigningPair, now: int, *, user_jwt: str | None = None,
             error: str | None = None) -> str:
    """The signed ``AuthorizationResponseClaims``: exactly one of ``user_jwt`` or ``error``."""
    if (user_jwt is None) == (error is None):
        raise ValueError("give exactly one of user_jwt or error")
    answer = {"jwt": user_jwt} if user_jwt is not None else {"error": error}
    claims = {"aud": request.server_id, "sub": request.user_nkey,
              "nats": {**answer, "type": RESPONSE_TYPE, "version": 2}}
    return encode(claims, signer, now)


def allow(request: AuthRequest, signer: SigningPair, grant: NatsPermissions, *, account: str,
          name: str, expires: int, now: int) -> str:
    user = encode(user_claims(request, grant, account=account, name=name, expires=expires),
                  signer, now)
    return response(request, signer, now, user_jwt=user)
