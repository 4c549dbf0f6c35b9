"""How each denial reads over HTTP: its status, challenge, JSON body and redirect.

``decision.py`` says what was decided; this module renders a denial the way HTTP clients
expect it (RFC 6750 Bearer challenges, RFC 9470 step-up challenges, a redirect for a
browser, a small JSON body for an API client), into the Decision's ``status``,
``response_headers`` and ``body``. ``response.py`` then puts those on Envoy's wire.

- no or invalid token: 401 Bearer (``invalid_token`` when one was sent); a browser that
  sent none, or whose token cookie a new sign-in replaces (``SIGN_IN_AGAIN``), goes to
  ``login_url`` (302 with ``{rd}``);
- step-up needed: 401 ``insufficient_user_authentication`` (RFC 9470, with ``realm``); a
  browser goes to the ceremony (302 to ``stepup_url``) when the ceremony can satisfy the
  policy;
- policy not met: 403, with an ``insufficient_scope`` challenge where it applies;
- an ambiguous request: 400; could not decide: 503 (fail closed).

A browser navigation (``RequestView.wants_html``: GET/HEAD whose Accept prefers HTML) that
is not redirected gets the same status and challenge with a small HTML page as the body
(``pages.py``: who they are signed in as, what the route needs) instead of the JSON.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from extauthz import pages
from extauthz.decision import Decision, Headers, Reason
from extauthz.errors import (
    TokenExpired,
    TokenKeyUnknown,
    TokenMalformed,
    TokenRevoked,
    TokenSignatureInvalid,
)
from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR
from extauthz.request import RequestView
from extauthz.stepup.gate import stepup_url

_JSON = ("content-type", "application/json")
_REDIRECT_NO_STORE = ("cache-control", "no-store")
_HTML: Headers = (("content-type", pages.HTML_TYPE), *pages.SECURITY_HEADERS)

# A token cookie refused for one of these is replaced by signing in again: the browser is
# sent to ``login_url``. The others (an issuer, audience or algorithm we do not take, claims
# we refuse, a token too large, the cookie twice) would come back the same from the IdP and
# loop; they get the 401 page, with a link to sign in.
SIGN_IN_AGAIN = frozenset({TokenExpired.code, TokenRevoked.code, TokenSignatureInvalid.code,
                           TokenKeyUnknown.code, TokenMalformed.code})


def _page_headers(challenge: str | None) -> Headers:
    return ((("www-authenticate", challenge),) if challenge else ()) + _HTML


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
    token_in_cookie: bool = False,
) -> Decision:
    """401 with a Bearer challenge. A browser goes to the login URL when it sent no token,
    or a token cookie that signing in again replaces (``SIGN_IN_AGAIN``); else it gets the
    401 as a page."""
    browser = view.wants_html
    again = token_in_cookie and reason in SIGN_IN_AGAIN
    if login_url and browser and (not token_sent or again):
        return Decision(
            allowed=False, status=302, reason=reason, description=description,
            decision_id=decision_id, policy_id=policy_id,
            response_headers=(("location", login_redirect(login_url, view.original_url)),
                              _REDIRECT_NO_STORE),
        )
    error = "invalid_token" if token_sent else None
    challenge = bearer_challenge(realm, error, description if token_sent else None)
    if browser:
        signin = login_redirect(login_url, view.original_url) if login_url else None
        return Decision(
            allowed=False, status=401, reason=reason, description=description,
            decision_id=decision_id, policy_id=policy_id, response_headers=_page_headers(challenge),
            body=pages.unauthenticated_page(token_sent=token_sent, details=description,
                                            signin_url=signin),
        )
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
    realm: str,
    login_url: str | None = None,
) -> Decision:
    """A recent WebAuthn proof is needed: browsers go to the ceremony, API clients get the
    RFC 9470 challenge (with the ``realm`` of every other challenge). A browser on a route
    only the IdP's step-up satisfies gets the challenge with a page saying so."""
    description = STEPUP_DESCRIPTION
    if view.wants_html and WEBAUTHN_ACR in acr_values:  # our ceremony can satisfy it
        return Decision(
            allowed=False, status=302, reason=Reason.STEPUP_REQUIRED, description=description,
            decision_id=decision_id, identity=identity, policy_id=policy_id,
            response_headers=(("location", stepup_url(view.original_url)), _REDIRECT_NO_STORE),
        )
    acr = " ".join(acr_values)
    challenge = (f'Bearer realm={_quoted(realm)}, error="insufficient_user_authentication", '
                 f"error_description={_quoted(description)}, acr_values={_quoted(acr)}, "
                 f'max_age="{max_age}"')
    if view.wants_html:
        signin = login_redirect(login_url, view.original_url) if login_url else None
        return Decision(
            allowed=False, status=401, reason=Reason.STEPUP_REQUIRED, description=description,
            decision_id=decision_id, identity=identity, policy_id=policy_id,
            response_headers=_page_headers(challenge),
            body=pages.idp_stepup_page(identity=identity, max_age=max_age, signin_url=signin),
        )
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
    view: RequestView | None = None,
    needs: str | None = None,
    login_url: str | None = None,
) -> Decision:
    """403; with ``missing_scopes`` (and the ``realm``) an ``insufficient_scope`` Bearer
    challenge naming them (RFC 6750 §3.1). A browser ``view`` gets it as a page saying who
    they are and what the route ``needs`` (the policy's description)."""
    error = "forbidden"
    challenge = None
    if missing_scopes and realm is not None:
        error = "insufficient_scope"
        challenge = bearer_challenge(realm, error, description, scope=" ".join(missing_scopes))
    if view is not None and view.wants_html:
        signin = login_redirect(login_url, view.original_url) if login_url else None
        return Decision(
            allowed=False, status=403, reason=reason, description=description,
            decision_id=decision_id, identity=identity, policy_id=policy_id,
            response_headers=_page_headers(challenge),
            body=pages.forbidden_page(identity=identity, needs=needs, details=description,
                                      signin_url=signin),
        )
    headers: Headers = (_JSON,) if challenge is None else (("www-authenticate", challenge), _JSON)
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


def unavailable(decision_id: str, *, reason: str, description: str,
                view: RequestView | None = None) -> Decision:
    """503: the service could not decide (a dependency down, a bug). Fail closed. A browser
    ``view`` gets it as a page."""
    if view is not None and view.wants_html:
        return Decision(
            allowed=False, status=503, reason=reason, description=description,
            decision_id=decision_id, response_headers=(*_HTML, ("retry-after", "1")),
            body=pages.unavailable_page(details=description),
        )
    return Decision(
        allowed=False, status=503, reason=reason, description=description,
        decision_id=decision_id,
        response_headers=(_JSON, ("retry-after", "1")),
        body=json_body("temporarily_unavailable", description),
    )
