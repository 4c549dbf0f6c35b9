"""Removing passkeys ends the step-ups made before, in every worker, within a second.

A step-up cookie names its passkey (``cid``), but Check never reads the store (no I/O on
the hot path), so "does that passkey still exist?" cannot be asked per request, and a
per-user passkey epoch would need its own way into every worker. Revocations already
have one: each worker holds them in memory, follows them by pub/sub (Redis) or by watching
the state file, and the step-up gate (``stepup/gate.py``) checks ``stepup_revoked(issuer,
subject, auth_time)``.
So a removal (on the account page or with ``extauthz webauthn remove``) records a
``stepup`` revocation for that user as of now: every cookie of that user minted up to
this second stops working, whichever passkey made it, and the user confirms again with a
passkey they still have. Tokens are untouched.

The revocation is written *before* the passkey is removed: if the removal then fails, the
cookies are ended anyway (fail closed); and written again, as of that later second, once
the passkey is gone, so a ceremony with it that finished in between is ended too. It
lives as long as the longest step-up cookie any configuration can mint
(``stepup.max_age_limit`` at its maximum) plus a minute of clock skew, so it outlives every
cookie it ends even if the CLI and the workers read different configs.
"""

from __future__ import annotations

from extauthz.config import MAX_STEPUP_COOKIE_AGE
from extauthz.revocation.model import Revocation
from extauthz.revocation.store import RevocationStore

LONGEST_COOKIE = MAX_STEPUP_COOKIE_AGE
STEPUP_REVOCATION_TTL = LONGEST_COOKIE + 60


def stepup_revocation(issuer: str, subject: str, now: int, reason: str) -> Revocation:
    return Revocation("stepup", subject, issuer, now, now + STEPUP_REVOCATION_TTL, reason)


async def end_stepups(revocations: RevocationStore, issuer: str, subject: str, now: int,
                      reason: str) -> None:
    """Every step-up of this user made up to ``now`` stops counting, in every worker."""
    await revocations.add(stepup_revocation(issuer, subject, now, reason))
