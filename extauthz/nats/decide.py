"""One authorization request decided: the token verified as on the HTTP path, the NATS policy
found, the answer signed. No network I/O but a JWKS fetch on an unknown key (as for Check).

The token is ``connect_opts.auth_token``; a client that can only send a user and password
sends ``user: bearer`` (``TOKEN_USER``) and the token as the password. Anything else (no
token, a token both ways, another user name) is refused.
"""

from __future__ import annotations

from typing import NamedTuple

from extauthz.authorize import DecisionIds
from extauthz.decision import Decision, Reason
from extauthz.engine import Engine
from extauthz.errors import CredentialAmbiguous, KeysUnavailable, TokenError
from extauthz.identity.model import Identity
from extauthz.nats import reply
from extauthz.nats.permissions import connection_expiry
from extauthz.nats.permissions import decide as decide_policy
from extauthz.nats.request import AuthRequest
from extauthz.request import RequestView

TOKEN_USER = "bearer"  # noqa: S105 (the user name that marks the password as the token)
_EMPTY: dict[str, str] = {}


# The audit record's view of a request that could not be read (transport nats, nothing else).
UNKNOWN_REQUEST = RequestView(method="CONNECT", scheme="nats", host="", path="", query="",
                              headers=_EMPTY, context_extensions=_EMPTY, source_address="",
                              request_id="")


class Answer(NamedTuple):
    decision: Decision
    response: str  # the signed authorization response JWT (allow or error)
    expires: int = 0  # allowed: when the user JWT (the connection) expires


def request_view(request: AuthRequest) -> RequestView:
    """The audit record's view of a connection: transport ``nats`` (scheme), the server's id
    as host, the client's host as source, ``<server name>/<client id>`` as request id."""
    return RequestView(method="CONNECT", scheme="nats", host=request.server_id, path="",
                       query="", headers=_EMPTY, context_extensions=_EMPTY,
                       source_address=request.client_host,
                       request_id=f"{request.server_name}/{request.client_id}")


def token_of(request: AuthRequest) -> str | None:
    """The connection's token, or None; TokenError when it is ambiguous."""
    if request.auth_token is not None:
        if request.user is not None or request.password is not None:
            raise CredentialAmbiguous("the connection sent a token and a user/password; send one")
        return request.auth_token
    if request.user is None and request.password is None:
        return None
    if request.user != TOKEN_USER or request.password is None:
        raise TokenError(f"the connection sent a user/password; send the token as auth_token, "
                         f"or as the password of user {TOKEN_USER!r}")
    return request.password


class Decider:
    """The NATS side of the engine: verification, policies, revocations are the engine's."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ids = DecisionIds()
        nats = engine.settings.nats
        assert nats.issuer is not None
        assert nats.account is not None
        self._issuer = nats.issuer
        self._account = nats.account

    def _deny(self, request: AuthRequest, decision_id: str, status: int, reason: str,
              description: str, identity: Identity | None = None,
              policy_id: str | None = None) -> Answer:
        decision = Decision(allowed=False, status=status, reason=reason, description=description,
                            decision_id=decision_id, identity=identity, policy_id=policy_id)
        now = int(self._engine.clock.wall())
        error = f"{reason}: {description} (decision {decision_id})"
        return Answer(decision, reply.response(request, self._issuer, now, error=error))

    async def decide(self, request: AuthRequest) -> Answer:
        decision_id = self._ids.next()
        engine = self._engine
        index = engine.policies.index
        if index is None:
            return self._deny(request, decision_id, 503, Reason.POLICIES_UNAVAILABLE,
                              "policies are not loaded yet")
        if not engine.revocations.ready:
            return self._deny(request, decision_id, 503, Reason.REVOCATIONS_UNAVAILABLE,
                              "revocations are not loaded yet")
        try:
            token = token_of(request)
            if token is None:
                return self._deny(request, decision_id, 401, Reason.TOKEN_MISSING,
                                  "no token in the connection (auth_token)")
            identity = await engine.verifier.verify(token)
        except TokenError as e:
            return self._deny(request, decision_id, 401, e.code, e.message)
        except KeysUnavailable as e:
            return self._deny(request, decision_id, 503, Reason.KEYS_UNAVAILABLE, e.message)
        now = engine.clock.wall()
        verdict = decide_policy(index.nats, identity, now)
        policy_id = verdict.policy.id if verdict.policy is not None else None
        grant = verdict.permissions
        if grant is None:
            return self._deny(request, decision_id, 403, verdict.reason, verdict.description,
                              identity, policy_id)
        assert verdict.policy is not None  # a grant comes from the policy that decided
        expires = connection_expiry(verdict.policy, identity)  # the step-up window too
        response = reply.allow(request, self._issuer, grant, account=grant.account or self._account,
                               name=identity.username or identity.subject, expires=expires,
                               now=int(now))
        decision = Decision(allowed=True, status=200, reason=Reason.ALLOWED, description="allowed",
                            decision_id=decision_id, identity=identity, policy_id=policy_id)
        return Answer(decision, response, expires)

    @property
    def issuer_public(self) -> str:
        return self._issuer.public

    def next_id(self) -> str:
        return self._ids.next()

    def failure(self, request: AuthRequest) -> Answer:
        """An internal failure: refused (fail closed)."""
        return self._deny(request, self._ids.next(), 503, Reason.INTERNAL_ERROR,
                          "the callout failed; see its log")
