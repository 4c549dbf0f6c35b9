"""The pipeline: policy -> identity -> authorize -> Decision. No protobuf, no network I/O
on the common path (keys and verified tokens are cached; only a cache miss awaits).
"""

from __future__ import annotations

import itertools
import os

from extauthz import decision as d
from extauthz.config import Settings
from extauthz.decision import Decision, Reason
from extauthz.errors import KeysUnavailable, TokenError
from extauthz.identity.extract import find_token
from extauthz.identity.model import Identity
from extauthz.identity.verify import TokenVerifier
from extauthz.identity_headers import HeaderNames, headers_to_remove, identity_headers
from extauthz.request import RequestView


class DecisionIds:
    """Unique, cheap decision ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


class Authorizer:
    def __init__(self, settings: Settings, verifier: TokenVerifier) -> None:
        self._settings = settings
        self._verifier = verifier
        self._names = HeaderNames.with_prefix(settings.headers.prefix)
        self._ids = DecisionIds()
        self._cookie = settings.token.cookie

    async def check(self, view: RequestView) -> Decision:
        decision_id = self._ids.next()
        action = self._settings.default_action
        if action == "deny":
            return d.forbidden(decision_id, reason=Reason.NO_POLICY,
                               description="no policy allows this request")
        required = action == "authenticated"
        token = find_token(view, self._cookie)
        identity: Identity | None = None
        if token is not None:
            try:
                identity = await self._verifier.verify(token)
            except TokenError as e:
                if required:
                    return self._unauthenticated(decision_id, view, e.code, e.message, True)
            except KeysUnavailable as e:
                if required:
                    return d.unavailable(decision_id, reason=Reason.KEYS_UNAVAILABLE,
                                         description=e.message)
        elif required:
            return self._unauthenticated(decision_id, view, Reason.TOKEN_MISSING,
                                         "no bearer token in the request", False)
        reason = Reason.ALLOWED if identity is not None else Reason.ALLOWED_PUBLIC
        return self._allow(decision_id, view, identity, reason, None)

    def _unauthenticated(
        self, decision_id: str, view: RequestView, reason: str, description: str, token_sent: bool
    ) -> Decision:
        return d.unauthenticated(
            decision_id, view, realm=self._settings.realm, login_url=self._settings.login_url,
            reason=reason, description=description, token_sent=token_sent,
        )

    def _allow(
        self, decision_id: str, view: RequestView, identity: Identity | None, reason: str,
        policy_id: str | None,
    ) -> Decision:
        hs = self._settings.headers
        added = identity_headers(identity, self._names, hs, decision_id=decision_id,
                                 policy_id=policy_id)
        return d.allow(
            decision_id, identity, reason=reason, description="allowed",
            upstream_headers=added, remove_headers=headers_to_remove(view, self._names, hs, added),
            policy_id=policy_id,
        )
