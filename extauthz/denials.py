"""How each denial reads over HTTP: its status, challenge, JSON body and redirect.

``decision.py`` says what was decided; this module renders a denial the way HTTP clients
expect it (RFC 6750 Bearer challenges, RFC 9470 step-up challenges, a redirect for a
browser, a small JSON body for an API client), into the Decision's ``status``,
``response_headers`` and ``body``. ``response.py`` then puts those on Envoy's wire.

- no or invalid token: 401 Bearer (``invalid_token`` when one was sent); a browser that
  sent none goes to ``login_url`` (302);
- step-up needed: 401 ``insufficient_user_authentication``; a browser goes to the ceremony
  (302 to ``stepup_url``) when the ceremony can satisfy the policy;
- policy not met: 403, with an ``insufficient_scope`` challenge where it applies;
- an ambiguous request: 400; could not decide: 503 (fail closed).
"""

from __future__ import annotations

import json
from urllib.parse import quote

from extauthz.decision import Decision, Headers, Reason
from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR
from extauthz.request import RequestView
from extauthz.stepup.gate import stepup_url

_JSON = ("content-type", "application/json")
_REDIRECT_NO_STORE = ("cache-control", "no-store")


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


def login_redirect(login_url: str, rd: str) -> str:
    """The configured login URL with ``{rd}`` replaced by the URL to come back to."""
    return login_url.replace("{rd}", quote(rd, safe=""))


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
        return Decision(
            allowed=False, status=302, reason=reason, description=description,
            decision_id=decision_id, policy_id=policy_id,
            response_headers=(("location", login_redirect(login_url, view.original_url)),
                              _REDIRECT_NO_STORE),
        )
    error = "invalid_token" if token_sent else None
    challenge = bearer_challenge(realm, error, description if token_sent else None)
    return Decision(
        allowed=False, status=401, reason=reason, description=description,
        decision_id=decision_id, policy_id=policy_id,
        response_headers=(("www-authenticate", challenge), _JSON),
        body=json_body(error or "unauthorized", description),
    )


STEPUP_DESCRIPTION = "a recent hardware-backed sign-in (WebAuthn step-up) is required"


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
    description = STEPUP_DESCRIPTION
    if view.wants_html and WEBAUTHN_ACR in acr_values:  # our ceremony can satisfy it
        return Decision(
            allowed=False, status=302, reason=Reason.STEPUP_REQUIRED, description=description,
            decision_id=decision_id, identity=identity, policy_id=policy_id,
            response_headers=(("location", stepup_url(view.original_url)), _REDIRECT_NO_STORE),
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
    realm: str | None = None,
    missing_scopes: tuple[str, ...] = (),
) -> Decision:
    """403; with ``missing_scopes`` (and the ``realm``) an ``insufficient_scope`` Bearer
    challenge naming them (RFC 6750 §3.1)."""
    error = "forbidden"
    headers: Headers = (_JSON,)
    if missing_scopes and realm is not None:
        error = "insufficient_scope"
        challenge = bearer_challenge(realm, error, description, scope=" ".join(missing_scopes))
        headers = (("www-authenticate", challenge), _JSON)
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
