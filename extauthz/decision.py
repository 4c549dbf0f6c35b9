"""The typed answer of the pipeline, and the few ways to make one.

A Decision says allow or deny, the HTTP status, a stable reason code and a
description for people, the headers for the upstream (allow) or the client (deny),
and the body. ``response.py`` turns it into Envoy's CheckResponse; nothing else does.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import quote

from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR
from extauthz.request import RequestView

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


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(
    realm: str, error: str | None = None, description: str | None = None, scope: str | None = None
) -> str:
    """A ``WWW-Authenticate: Bearer`` value (RFC 6750 §3)."""
    parts = [f"realm={_quoted(realm)}"]
    if error:
        parts.append(f"error={_quoted(error)}")
    if description:
        parts.append(f"error_description={_quoted(description)}")
    if scope:
        parts.append(f"scope={_quoted(scope)}")
    return "Bearer " + ", ".join(parts)


def json_body(error: str, description: str) -> str:
    return json.dumps({"error": error, "error_description": description}, separators=(",", ":"))


_JSON = ("content-type", "application/json")


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


def unauthenticated(
    decision_id: str,
    view: RequestView,
    *,
    realm: str,
    login_url: str | None,
    reason: str,
    description: str,
    token_sent: bool,
    policy_id: str | None = None,
) -> Decision:
    """401 with a Bearer challenge; a browser without a token goes to the login URL."""
    if login_url and view.wants_html and not token_sent:
        location = login_url.replace("{rd}", quote(view.original_url, safe=""))
        return Decision(
            allowed=False, status=302, reason=reason, description=description,
            decision_id=decision_id, policy_id=policy_id,
            response_headers=(("location", location), ("cache-control", "no-store")),
        )
    error = "invalid_token" if token_sent else None
    challenge = bearer_challenge(realm, error, description if token_sent else None)
    return Decision(
        allowed=False, status=401, reason=reason, description=description,
        decision_id=decision_id, policy_id=policy_id,
        response_headers=(("www-authenticate", challenge), _JSON),
        body=json_body(error or "unauthorized", description),
    )


STEPUP_PATH = "/.extauthz/stepup"


def stepup_required(
    decision_id: str,
    view: RequestView,
    *,
    acr_values: tuple[str, ...],
    max_age: int,
    identity: Identity | None,
    policy_id: str | None,
) -> Decision:
    """A recent WebAuthn proof is needed: browsers go to the ceremony, API clients get the
    RFC 9470 challenge."""
    description = "a recent hardware-backed sign-in (WebAuthn step-up) is required"
    if view.wants_html and WEBAUTHN_ACR in acr_values:  # our ceremony can satisfy it
        location = f"{STEPUP_PATH}?rd={quote(view.original_url, safe='')}"
        return Decision(
            allowed=False, status=302, reason=Reason.STEPUP_REQUIRED, description=description,
            decision_id=decision_id, identity=identity, policy_id=policy_id,
            response_headers=(("location", location), ("cache-control", "no-store")),
        )
    acr = " ".join(acr_values)
    challenge = (f'Bearer error="insufficient_user_authentication", '
                 f"error_description={_quoted(description)}, acr_values={_quoted(acr)}, "
                 f'max_age="{max_age}"')
    body = json.dumps({"error": "insufficient_user_authentication", "error_description": description,
                       "acr_values": acr, "max_age": max_age}, separators=(",", ":"))
    return Decision(
        allowed=False, status=401, reason=Reason.STEPUP_REQUIRED, description=description,
        decision_id=decision_id, identity=identity, policy_id=policy_id,
        response_headers=(("www-authenticate", challenge), _JSON), body=body,
    )


def forbidden(
    decision_id: str,
    *,
    reason: str,
    description: str,
    identity: Identity | None = None,
    policy_id: str | None = None,
    challenge: str | None = None,
    error: str = "forbidden",
) -> Decision:
    headers: Headers = ((("www-authenticate", challenge),) if challenge else ()) + (_JSON,)
    return Decision(
        allowed=False, status=403, reason=reason, description=description,
        decision_id=decision_id, identity=identity, policy_id=policy_id,
        response_headers=headers, body=json_body(error, description),
    )


def bad_request(decision_id: str, *, description: str) -> Decision:
    """400: the request's path or authority reads differently depending on who decodes it."""
    return Decision(
        allowed=False, status=400, reason=Reason.BAD_REQUEST, description=description,
        decision_id=decision_id, response_headers=(_JSON,),
        body=json_body("bad_request", description),
    )


def unavailable(decision_id: str, *, reason: str, description: str) -> Decision:
    """503: the service could not decide (a dependency down, a bug). Fail closed."""
    return Decision(
        allowed=False, status=503, reason=reason, description=description,
        decision_id=decision_id,
        response_headers=(_JSON, ("retry-after", "1")),
        body=json_body("temporarily_unavailable", description),
    )
