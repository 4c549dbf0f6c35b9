"""The typed answer of the pipeline.

A Decision says allow or deny, the HTTP status, a stable reason code and a
description for people, the headers for the upstream (allow) or the client (deny),
and the body. ``allow`` makes an allow; a denial is rendered for HTTP (challenge, JSON
body, redirect) by ``denials.py``; ``response.py`` turns either into Envoy's
CheckResponse, and nothing else does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from extauthz.identity.model import Identity

Headers = tuple[tuple[str, str], ...]


class Reason(StrEnum):
    """Stable reason codes: the metrics label, the audit field, the JSON ``error`` hint."""

    ALLOWED = "allowed"
    ALLOWED_PUBLIC = "allowed_public"
    TOKEN_MISSING = "token_missing"  # noqa: S105 (a reason code, not a secret)
    NO_POLICY = "no_policy"
    POLICY_DENIED = "policy_denied"
    POLICY_UNKNOWN = "policy_unknown"
    POLICIES_UNAVAILABLE = "policies_unavailable"
    REVOCATIONS_UNAVAILABLE = "revocations_unavailable"
    ISSUER_NOT_ALLOWED = "issuer_not_allowed"
    AUDIENCE_NOT_ALLOWED = "audience_not_allowed"
    SCOPE_MISSING = "scope_missing"
    CLAIM_MISMATCH = "claim_mismatch"
    DRY_RUN = "dry_run"
    STEPUP_REQUIRED = "stepup_required"
    KEYS_UNAVAILABLE = "keys_unavailable"
    INTERNAL_ERROR = "internal_error"
    BAD_CHECK_REQUEST = "bad_check_request"
    BAD_REQUEST = "bad_request"  # an ambiguous path or authority: refused, never guessed


class Decision(NamedTuple):
    """Immutable, and made on every check: a NamedTuple, not a frozen dataclass, for the
    microseconds (benchmarks/NOTES.md)."""

    allowed: bool
    status: int
    reason: str
    description: str
    decision_id: str
    identity: Identity | None = None
    policy_id: str | None = None
    dry_run: bool = False
    would_deny: str | None = None  # dry-run: the reason it would have been denied
    upstream_headers: Headers = ()
    remove_headers: tuple[str, ...] = ()
    response_headers: Headers = ()
    body: str = ""


def allow(
    decision_id: str,
    identity: Identity | None,
    *,
    reason: str,
    description: str,
    upstream_headers: Headers,
    remove_headers: tuple[str, ...],
    policy_id: str | None = None,
    would_deny: str | None = None,
) -> Decision:
    return Decision(
        allowed=True, status=200, reason=reason, description=description,
        decision_id=decision_id, identity=identity, policy_id=policy_id,
        dry_run=would_deny is not None, would_deny=would_deny,
        upstream_headers=upstream_headers, remove_headers=remove_headers,
    )
