"""Which NATS policy decides a connection, and what it grants.

NATS policies (``nats:`` instead of ``match:``) are tried by priority, then id; the first
whose ``require`` the identity meets decides: ``action: deny`` refuses, ``allow`` grants its
publish and subscribe lists. None met: refused, whatever ``default_action`` says (NATS is
deny-by-default). ``require.stepup`` is met by the token itself (RFC 9470): its ``acr`` is
one of ``acr_values`` and its ``auth_time`` at most ``max_age`` seconds ago — the browser's
step-up cookie never reaches a NATS connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from extauthz.decision import Reason
from extauthz.identity.model import Identity
from extauthz.policy.evaluate import unmet
from extauthz.policy.model import NatsPermissions, Policy, StepupRequirement


@dataclass(frozen=True)
class NatsVerdict:
    allowed: bool
    reason: str
    description: str
    policy: Policy | None = None

    @property
    def permissions(self) -> NatsPermissions | None:
        return self.policy.nats if self.allowed and self.policy is not None else None


def stepup_met(stepup: StepupRequirement, identity: Identity, now: float) -> bool:
    """The token says the user signed in with one of ``acr_values`` within ``max_age``."""
    return (identity.acr in stepup.acr_values and identity.auth_time is not None
            and now - identity.auth_time <= stepup.max_age)


def connection_expiry(policy: Policy, identity: Identity) -> int:
    """When the connection ``policy`` allows must end: when the token expires, or, when the
    policy requires a step-up within ``max_age``, when that window closes (if sooner)."""
    expires = int(identity.expires_at)
    stepup = policy.require.stepup
    if stepup is not None and identity.auth_time is not None:
        expires = min(expires, identity.auth_time + stepup.max_age)
    return expires


def why_not(policy: Policy, identity: Identity, now: float) -> str | None:
    """Why ``policy``'s ``require`` is not met by ``identity``, or None when it is."""
    problem = unmet(policy.require, identity)
    if problem is not None:
        return problem.description
    stepup = policy.require.stepup
    if stepup is not None and not stepup_met(stepup, identity, now):
        return (f"requirement not met: stepup (acr one of {', '.join(stepup.acr_values)}, "
                f"auth_time within {stepup.max_age}s)")
    return None


def decide(policies: Sequence[Policy], identity: Identity, now: float) -> NatsVerdict:
    """The verdict of the first of ``policies`` (``PolicyIndex.nats``: enforcing ones, by
    priority then id) whose require is met."""
    for policy in policies:
        if why_not(policy, identity, now) is not None:
            continue
        if policy.action == "deny":
            return NatsVerdict(False, Reason.POLICY_DENIED, f"policy {policy.id} denies", policy)
        return NatsVerdict(True, Reason.ALLOWED, "allowed", policy)
    return NatsVerdict(False, Reason.NO_POLICY, "no NATS policy allows this identity")
