"""What a browser gets when it is denied: a small HTML page (who, what the route needs),
a sign-in redirect for a session that ended; API clients keep JSON and challenges.
(The same pages in a real Chromium, through Envoy: test_browser_pages.py.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from extauthz.accept import prefers_html
from extauthz.authorize import Authorizer
from extauthz.decision import Decision
from extauthz.identity.verify import TokenVerifier
from extauthz.policy.sync import PolicySnapshot
from extauthz.response import ResponseEncoder
from tests.support.clock import FakeClock
from tests.support.issuer import LocalIssuer
from tests.support.requests import request_view as req
from tests.support.settings import make_settings
from tests.support.verifying import policy_snapshot, verifying

CHROMIUM = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
            "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
LOGIN = "https://login.example.com/authorize?prompt=login&rd={rd}"
DOCS: list[dict[str, Any]] = [
    {"id": "payments-admin", "description": "Payments administrators (group payments-admin)",
     "match": {"paths": [{"prefix": "/admin/"}]},
     "require": {"claims": {"groups": ["payments-admin"]}}},
    {"id": "scoped", "match": {"paths": [{"prefix": "/orders/"}]},
     "require": {"scopes": ["orders:write"]}},
    {"id": "closed", "description": "Retired in 2025", "match": {"paths": [{"prefix": "/old/"}]},
     "action": "deny"},
    {"id": "pay", "match": {"paths": [{"prefix": "/pay/"}]}, "require": {"stepup": {}}},
    {"id": "idp-mfa", "match": {"paths": [{"prefix": "/mfa/"}]},
     "require": {"stepup": {"max_age": 300, "acr_values": ["phr"]}}},
]


@pytest.mark.parametrize(("method", "accept", "browser"), [
    ("GET", CHROMIUM, True),
    ("GET", FIREFOX, True),
    ("HEAD", "text/html", True),
    ("GET", "application/json;q=0.9, text/html", True),
    ("GET", "TEXT/HTML", True),
    ("POST", CHROMIUM, False),                      # a form post or fetch: not a navigation
    ("GET", "*/*", False),                          # curl, fetch(): no preference
    ("GET", None, False),
    ("GET", "text/html;q=0", False),                # named, and refused
    ("GET", "text/html;q=0.5, application/json", False),
    ("GET", "application/json, text/html", False),  # a tie is not a preference
    ("GET", "text/html;q=0.5, */*", False),         # anything is preferred over HTML
    ("GET", "text/*", False),
    ("GET", "application/json, text/htmlx", False),
    ("GET", "text/html;q=2", False),                # not a q-value: not guessed
    ("GET", "text/html;q=nan", False),
    ("GET", "text/html;q=0;q=1", False),            # two weights: ambiguous, not resolved
    ("GET", "text/html" + ", a/b" * 70, False),     # more ranges than any browser sends
])
def test_a_browser_is_a_navigation_whose_accept_prefers_html(
    method: str, accept: str | None, browser: bool
) -> None:
    assert prefers_html(method, accept) is browser
    assert req("/x", method=method, headers={"accept": accept} if accept else {}).wants_html is browser


def test_long_accept_headers_are_read_but_not_kept() -> None:
    from extauthz import accept

    long = "text/html;q=0.9," + "x-a/b;q=0.1," * 60 + "application/json;q=0.8"
    assert len(long) > 512
    assert prefers_html("GET", long)
    assert long not in accept._ANSWERS._entries  # a client inventing headers costs no memory


@pytest.fixture
async def checks(issuer: LocalIssuer) -> AsyncIterator[tuple[Authorizer, TokenVerifier, FakeClock]]:
    async with verifying(issuer, make_settings(issuer, default_action="deny", login_url=LOGIN,
                                               token={"cookie": "session"})) as v:
        yield (Authorizer(settings=v.settings, verifier=v.verifier,
                          policies=policy_snapshot(DOCS, v.clock)), v.verifier, v.clock)


@pytest.fixture
def authorizer(checks: tuple[Authorizer, TokenVerifier, FakeClock]) -> Authorizer:
    return checks[0]


def browser(token: str | None = None, *, cookie: str | None = None) -> dict[str, str]:
    headers = {"accept": CHROMIUM}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if cookie:
        headers["cookie"] = f"theme=dark; session={cookie}"
    return headers


def headers(decision: Decision) -> dict[str, str]:
    return dict(decision.response_headers)


def assert_page(decision: Decision, status: int) -> str:
    """A denial as a page: the status, the step-up pages' CSP, HTML; its text."""
    assert (decision.allowed, decision.status) == (False, status)
    h = headers(decision)
    assert h["content-type"] == "text/html; charset=utf-8"
    assert h["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    assert decision.body.startswith("<!doctype html>")
    assert '<link rel="stylesheet" href="/.extauthz/static/extauthz.css">' in decision.body
    assert "<script" not in decision.body  # the denial pages need none
    return decision.body


async def test_a_browser_denied_by_a_policy_gets_a_page_saying_who_they_are_and_what_it_needs(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    token = issuer.mint("ES256", groups=["team-of-alice"])
    body = assert_page(await authorizer.check(req("/admin/x", headers=browser(token))), 403)
    assert "You are signed in as <strong class=\"who\">alice@example.com</strong>." in body
    assert "Payments administrators (group payments-admin)" in body  # the policy's description
    assert "requirement not met: claims.groups" in body
    assert token not in body
    assert token.split(".")[1] not in body
    assert "team-of-alice" not in body  # never the token's own claims
    assert 'href="https://login.example.com/authorize?prompt=login&amp;rd=%2Fadmin%2Fx"' in body


async def test_an_api_client_denied_by_a_policy_keeps_the_json_body_and_challenge(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    token = issuer.mint("ES256", scope="read")
    for accept in ("application/json", "*/*", ""):
        d = await authorizer.check(req("/orders/1", token, headers={"accept": accept}))
        assert d.status == 403
        assert headers(d)["content-type"] == "application/json"
        assert d.body == ('{"error":"insufficient_scope","error_description":'
                          '"requirement not met: scope orders:write"}')
        assert headers(d)["www-authenticate"].startswith('Bearer realm="extauthz", '
                                                         'error="insufficient_scope"')
    page = await authorizer.check(req("/orders/1", headers=browser(token)))
    assert_page(page, 403)
    assert headers(page)["www-authenticate"] == headers(d)["www-authenticate"]  # same challenge


async def test_what_the_page_says_is_escaped_so_a_claim_cannot_run_script(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    token = issuer.mint("ES256", email="<script>alert(1)</script>@example.com", groups=["dev"])
    body = assert_page(await authorizer.check(req("/admin/x", headers=browser(token))), 403)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in body
    assert "<script>" not in body


async def test_a_route_closed_to_everyone_says_so_with_its_description(authorizer: Authorizer) -> None:
    body = assert_page(await authorizer.check(req("/old/x", headers=browser())), 403)
    assert "no rule here lets anyone in" in body
    assert "Retired in 2025" in body
    body = assert_page(await authorizer.check(req("/nothing", headers=browser())), 403)
    assert "no policy allows this request" in body


async def test_an_expired_token_cookie_sends_a_browser_to_sign_in_again(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    expired = issuer.mint("ES256", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    d = await authorizer.check(req("/admin/x", query="tab=2", headers=browser(cookie=expired)))
    assert (d.status, d.reason) == (302, "token_expired")
    assert headers(d)["location"] == ("https://login.example.com/authorize?prompt=login&rd="
                                      "%2Fadmin%2Fx%3Ftab%3D2")
    assert headers(d)["cache-control"] == "no-store"
    for bad in ("not-a-jwt", issuer.mint("ES256")[:-4] + "AAAA"):  # malformed, bad signature
        assert (await authorizer.check(req("/admin/x", headers=browser(cookie=bad)))).status == 302


async def test_an_api_client_with_an_expired_token_still_gets_401_invalid_token(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    expired = issuer.mint("ES256", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    # the same cookie from a non-browser, and the token as a Bearer header from a browser
    for view in (req("/admin/x", headers={"cookie": f"session={expired}", "accept": "*/*"}),
                 req("/admin/x", expired, headers={"accept": "application/json"})):
        d = await authorizer.check(view)
        assert d.status == 401
        assert headers(d)["www-authenticate"] == (
            'Bearer realm="extauthz", error="invalid_token", error_description="token expired"')
        assert d.body == '{"error":"invalid_token","error_description":"token expired"}'
    d = await authorizer.check(req("/admin/x", expired, headers={"accept": CHROMIUM}))
    body = assert_page(d, 401)  # a Bearer header is not replaced by signing in: the page
    assert 'error="invalid_token"' in headers(d)["www-authenticate"]
    assert "Sign in again" in body


async def test_a_token_cookie_a_new_sign_in_would_repeat_gets_the_page_not_a_redirect_loop(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    wrong_audience = issuer.mint("ES256", aud="someone-else")
    d = await authorizer.check(req("/admin/x", headers=browser(cookie=wrong_audience)))
    body = assert_page(d, 401)
    assert 'href="https://login.example.com/authorize?prompt=login&amp;rd=%2Fadmin%2Fx"' in body


async def test_a_browser_without_a_token_or_login_url_gets_the_401_as_a_page(issuer: LocalIssuer) -> None:
    async with verifying(issuer, make_settings(issuer, default_action="authenticated")) as v:
        a = Authorizer(settings=v.settings, verifier=v.verifier, policies=policy_snapshot([], v.clock))
        d = await a.check(req("/x", headers={"accept": CHROMIUM}))
        body = assert_page(d, 401)
        assert "you are not signed in" in body
        assert headers(d)["www-authenticate"] == 'Bearer realm="extauthz"'
        api = await a.check(req("/x"))
        assert api.body == ('{"error":"unauthorized","error_description":'
                            '"no bearer token in the request"}')


async def test_a_browser_gets_the_503_as_a_page_and_an_api_client_as_json(issuer: LocalIssuer) -> None:
    async with verifying(issuer) as v:
        a = Authorizer(settings=v.settings, verifier=v.verifier, policies=PolicySnapshot(v.clock))
        body = assert_page(await a.check(req("/x", headers={"accept": CHROMIUM})), 503)
        assert "Try again shortly" in body
        assert "policies are not loaded yet" in body
        api = await a.check(req("/x"))
        assert (api.status, headers(api)["content-type"]) == (503, "application/json")
        assert headers(api)["retry-after"] == "1"


async def test_step_up_challenges_carry_the_realm_like_every_other_challenge(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    d = await authorizer.check(req("/pay/x", issuer.mint("ES256"), headers={"accept": "*/*"}))
    assert d.status == 401
    assert headers(d)["www-authenticate"] == (
        'Bearer realm="extauthz", error="insufficient_user_authentication", error_description="a '
        'recent hardware-backed sign-in (WebAuthn step-up) is required", '
        'acr_values="urn:extauthz:webauthn", max_age="300"')


async def test_a_browser_on_a_route_only_the_idp_can_step_up_gets_a_page_to_sign_in_again(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    d = await authorizer.check(req("/mfa/x", issuer.mint("ES256"), headers={"accept": CHROMIUM}))
    body = assert_page(d, 401)
    assert 'acr_values="phr"' in headers(d)["www-authenticate"]
    assert "a recent, strong sign-in at your identity provider" in body
    assert "alice@example.com" in body


async def test_per_user_pages_do_not_crowd_the_denial_memo(
    checks: tuple[Authorizer, TokenVerifier, FakeClock], issuer: LocalIssuer
) -> None:
    authorizer = checks[0]
    encoder = ResponseEncoder(decision_id_header="x-auth-decision-id")
    api = await authorizer.check(req("/admin/x", issuer.mint("ES256", groups=["dev"])))
    encoder.encode(api)
    kept = dict(encoder._denied._entries)
    assert len(kept) == 1
    page = await authorizer.check(req("/admin/x", headers=browser(issuer.mint("ES256", groups=["dev"]))))
    for n in range(5000):  # 5000 users' own pages: each is too large to be kept
        encoder.encode(page._replace(body=page.body.replace("alice", f"user{n}")))
    assert dict(encoder._denied._entries) == kept
