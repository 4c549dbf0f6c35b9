"""The pipeline: policy -> identity -> authorize -> Decision. No protobuf, no network I/O
on the common path (policies, keys and verified tokens are in memory; only a token-cache
miss with an unknown key awaits the IdP).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable

from extauthz import decision as d
from extauthz import denials
from extauthz.cache import BoundedCache
from extauthz.clock import SYSTEM_CLOCK, Clock
from extauthz.config import Settings
from extauthz.decision import Decision, Headers, Reason
from extauthz.errors import BadRequest, KeysUnavailable, TokenError
from extauthz.identity.extract import bearer_token, find_token, without_cookies
from extauthz.identity.model import Identity
from extauthz.identity.verify import TokenVerifier
from extauthz.identity_headers import (
    SPOOFABLE_BY_NAME,
    HeaderNames,
    headers_to_remove,
    identity_headers,
)
from extauthz.policy.evaluate import render_headers, unmet
from extauthz.policy.model import Policy, Requirements
from extauthz.policy.sync import PolicySnapshot
from extauthz.request import RequestView
from extauthz.revocation.sync import RevocationSnapshot
from extauthz.stepup.gate import StepupGate
from extauthz.telemetry.logs import DECISION_ID

log = logging.getLogger("extauthz.authorize")

_PUBLIC = Requirements(False, frozenset(), frozenset(), (), ())
_SIGNED_IN = Requirements(True, frozenset(), frozenset(), (), ())
_RENDERED_LIMIT = 8192
_Rendered = tuple[Identity | None, Policy | None, Headers]  # identity and policy held: ids stay theirs


class DecisionIds:
    """Unique, cheap decision ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


class Authorizer:
    """Decides one request from the snapshots it is given; built once per process by the
    engine (``engine.py``), whatever asks: Check, the step-up pages, ``policy explain``."""

    def __init__(self, *, settings: Settings, verifier: TokenVerifier, policies: PolicySnapshot,
                 stepups: StepupGate | None = None, clock: Clock = SYSTEM_CLOCK,
                 revocations: RevocationSnapshot | None = None,
                 on_dry_run: Callable[[str], None] | None = None) -> None:
        self._on_dry_run = on_dry_run
        self._settings = settings
        self._verifier = verifier
        self._policies = policies
        self._revocations = revocations
        self._stepups = stepups or StepupGate(
            cookie_name=settings.stepup.cookie_name, lifetime=settings.stepup.max_age_limit,
            clock=clock, revocations=revocations)
        self._names = HeaderNames.with_prefix(settings.headers.prefix)
        self._ids = DecisionIds()
        self._rendered: BoundedCache[tuple[int, int], _Rendered] = BoundedCache(_RENDERED_LIMIT)
        self._cookie = settings.token.cookie
        # Our credentials ride in cookies too: never pass them to the upstream.
        names = {settings.stepup.cookie_name}
        if settings.token.cookie and not settings.headers.forward_authorization:
            names.add(settings.token.cookie)
        self._credential_cookies = frozenset(names)
        self._spoofable: tuple[frozenset[str], frozenset[str]] | None = None

    @property
    def decision_id_header(self) -> str:
        """Where the upstream finds the decision id (the audit record's key)."""
        return self._names.decision_id

    def spoofable_headers(self) -> frozenset[str]:
        """Every header an upstream could take for one of ours that is known by name: the
        identity names (but the decision id, always set), ``impersonate-*`` and ``x-remote-*``
        by name, each policy's template headers; each also with '_' for '-'. A transport that
        may not see every client header (plain HTTP: the gateway forwards a list) names those
        it does not set for removal."""
        index = self._policies.index
        managed = index.managed_headers if index is not None else frozenset()
        kept = self._spoofable
        if kept is None or kept[0] is not managed:
            names = {*self._names.identity(), *SPOOFABLE_BY_NAME, *managed}
            names |= {n.replace("-", "_") for n in names}
            names.add(self._names.decision_id.replace("-", "_"))  # set only with '-'
            kept = self._spoofable = (managed, frozenset(names))
        return kept[1]

    async def check(self, view: RequestView) -> Decision:
        decision_id = self._ids.next()
        # Log lines written while deciding name it (JSON logs); not those after, in the same
        # task (a plain-HTTP connection answers its pipelined requests in one task).
        named = DECISION_ID.set(decision_id)
        try:
            return await self._decide(decision_id, view)
        finally:
            DECISION_ID.reset(named)

    async def _decide(self, decision_id: str, view: RequestView) -> Decision:
        index = self._policies.index
        if index is None:
            return denials.unavailable(decision_id, reason=Reason.POLICIES_UNAVAILABLE,
                                       description="policies are not loaded yet", view=view)
        if self._revocations is not None and not self._revocations.ready:
            return denials.unavailable(decision_id, reason=Reason.REVOCATIONS_UNAVAILABLE,
                                       description="revocations are not loaded yet", view=view)
        try:
            match, shadow = index.lookup(view)
        except KeyError:
            return denials.forbidden(
                decision_id, reason=Reason.POLICY_UNKNOWN, view=view,
                description="the route is bound to a policy that does not exist")
        except BadRequest as e:  # an encoded separator that changes which policy applies
            log.warning("bad request refused: %s", e.message)
            return denials.bad_request(decision_id, description=e.message)
        # A dry-run policy never decides: the enforcing match, or the default, does.
        if shadow is not None and shadow.host_rule == "bound":  # fail closed, as for an unknown id
            decision = denials.forbidden(
                decision_id, reason=Reason.POLICY_UNKNOWN, view=view,
                description=f"the route is bound to policy {shadow.policy.id}, which is in "
                            "dry-run mode and never decides")
        elif match is None:
            decision = await self._default(decision_id, view)
        else:
            decision = await self._evaluate(decision_id, view, match.policy)
        if shadow is None:
            return decision
        return await self._shadow(decision_id, view, shadow.policy, decision)

    async def _shadow(self, decision_id: str, view: RequestView, policy: Policy,
                      decision: Decision) -> Decision:
        """Evaluate a dry-run policy for the record: its would-be denial is logged, counted
        and kept in the audit fields (``dry_run``, ``would_deny``) of ``decision``, which is
        otherwise returned unchanged."""
        try:
            would = await self._evaluate(decision_id, view, policy)
            would_deny = None if would.allowed else would.reason
        except Exception:  # a trial must not change the answer, not even by failing
            log.exception("dry-run policy %s could not be evaluated: decision %s", policy.id,
                          decision_id)
            would_deny = Reason.INTERNAL_ERROR
        if would_deny is not None:
            log.info("dry-run policy %s would deny (%s); decided %s (%s) without it: decision %s",
                     policy.id, would_deny, "allow" if decision.allowed else "deny",
                     decision.reason, decision_id)
            if self._on_dry_run is not None:
                self._on_dry_run(policy.id)
        return decision._replace(dry_run=True, would_deny=would_deny)

    async def _default(self, decision_id: str, view: RequestView) -> Decision:
        action = self._settings.default_action
        if action == "deny":
            return denials.forbidden(decision_id, reason=Reason.NO_POLICY, view=view,
                                     description="no policy allows this request")
        require = _SIGNED_IN if action == "authenticated" else _PUBLIC
        return await self._authorize(decision_id, view, require, None)

    async def _evaluate(self, decision_id: str, view: RequestView, policy: Policy) -> Decision:
        if policy.action == "deny":
            return denials.forbidden(decision_id, reason=Reason.POLICY_DENIED, policy_id=policy.id,
                                     description=f"policy {policy.id} denies this request",
                                     view=view, needs=policy.description or None)
        return await self._authorize(decision_id, view, policy.require, policy)

    async def _authorize(
        self, decision_id: str, view: RequestView, require: Requirements, policy: Policy | None
    ) -> Decision:
        policy_id = policy.id if policy else None
        identity: Identity | None = None
        try:
            token = find_token(view, self._cookie)
        except TokenError as e:  # the token cookie twice: refused, never guessed
            if require.authenticated:
                return self._unauthenticated(decision_id, view, e.code, e.message, True, policy_id)
            token = None  # public: ignored like any bad token (both copies are stripped)
        if token is not None:
            try:
                identity = await self._verifier.verify(token)
            except TokenError as e:
                if require.authenticated:
                    return self._unauthenticated(decision_id, view, e.code, e.message, True,
                                                 policy_id)
            except KeysUnavailable as e:
                if require.authenticated:
                    return denials.unavailable(decision_id, reason=Reason.KEYS_UNAVAILABLE,
                                               description=e.message, view=view)
        elif require.authenticated:
            return self._unauthenticated(decision_id, view, Reason.TOKEN_MISSING,
                                         "no bearer token in the request", False, policy_id)
        if require.authenticated and identity is not None:
            problem = unmet(require, identity)
            if problem is not None:
                return denials.forbidden(decision_id, reason=problem.reason,
                                         description=problem.description, identity=identity,
                                         policy_id=policy_id, realm=self._settings.realm,
                                         missing_scopes=problem.missing_scopes, view=view,
                                         needs=(policy.description or None) if policy else None,
                                         login_url=self._settings.login_url)
            if require.stepup is not None:
                try:
                    stepped = self._stepups.stepped_up(require.stepup, identity,
                                                       view.headers.get("cookie"))
                except TokenError as e:  # the step-up cookie twice: refused, never guessed
                    return self._unauthenticated(decision_id, view, e.code, e.message, True,
                                                 policy_id)
                if stepped is None:
                    return denials.stepup_required(
                        decision_id, view, acr_values=require.stepup.acr_values,
                        max_age=require.stepup.max_age, identity=identity, policy_id=policy_id,
                        realm=self._settings.realm, login_url=self._settings.login_url)
                identity = stepped
        reason = Reason.ALLOWED if identity is not None else Reason.ALLOWED_PUBLIC
        return self._allow(decision_id, view, identity, reason, policy)

    def _unauthenticated(
        self, decision_id: str, view: RequestView, reason: str, description: str, token_sent: bool,
        policy_id: str | None,
    ) -> Decision:
        return denials.unauthenticated(
            decision_id, view, realm=self._settings.realm, login_url=self._settings.login_url,
            reason=reason, description=description, token_sent=token_sent, policy_id=policy_id,
            # a token cookie (no Bearer header) that a new sign-in can replace: sign in again
            token_in_cookie=token_sent and bearer_token(view.headers.get("authorization")) is None,
        )

    def _upstream_headers(self, identity: Identity | None, policy: Policy | None) -> Headers:
        """The identity and policy headers, kept per (identity, policy): a cached token
        yields the same Identity object on every check, so they are rendered once."""
        key = (id(identity), id(policy))
        kept = self._rendered.get(key)
        if kept is not None and kept[0] is identity and kept[1] is policy:
            return kept[2]
        added = identity_headers(identity, self._names, self._settings.headers,
                                 policy_id=policy.id if policy else None)
        if policy is not None and policy.headers:
            added += self._policy_headers(policy, identity)
        # The entry holds identity and policy, so their ids cannot be reused while it lives.
        return self._rendered.put(key, (identity, policy, added))[2]

    def _policy_headers(self, policy: Policy, identity: Identity | None) -> Headers:
        """A policy's template headers, less any in our own namespace. Validation refuses
        x-auth-* and impersonate-*, but only the running config knows a custom
        ``headers.prefix``; such a header is dropped here, never sent next to ours."""
        ours = (self._names.prefix, "impersonate-")
        rendered = render_headers(policy.headers, identity)
        kept = tuple((k, v) for k, v in rendered if not k.startswith(ours))
        if len(kept) != len(rendered):
            log.warning("policy %s sets headers in the identity prefix %r; they are not sent",
                        policy.id, self._names.prefix)
        return kept

    def _allow(
        self, decision_id: str, view: RequestView, identity: Identity | None, reason: str,
        policy: Policy | None,
    ) -> Decision:
        hs = self._settings.headers
        policy_id = policy.id if policy else None
        added = self._upstream_headers(identity, policy)
        drop_cookie = False
        cookie = view.headers.get("cookie")
        if cookie and any(name in cookie for name in self._credential_cookies):
            rest = without_cookies(cookie, self._credential_cookies)
            if rest != cookie:  # it carried our credentials: pass only the other cookies
                if rest:
                    added += (("cookie", rest),)
                else:
                    drop_cookie = True
        index = self._policies.index
        managed = index.managed_headers if index is not None else frozenset()
        remove = headers_to_remove(view, self._names, hs, added, managed)
        return d.allow(
            decision_id, identity, reason=reason,
            description="allowed",
            upstream_headers=added,
            remove_headers=(*remove, "cookie") if drop_cookie else remove,
            policy_id=policy_id,
        )
