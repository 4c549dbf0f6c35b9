"""Decisions under policies: each requirement kind, deny, dry-run, header templates."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from extauthz.authorize import Authorizer
from extauthz.decision import Decision
from extauthz.identity.verify import TokenVerifier
from extauthz.policy.sync import PolicySnapshot
from tests.support.clock import FakeClock
from tests.support.issuer import LocalIssuer
from tests.support.requests import STEPUP_COOKIE
from tests.support.requests import request_view as req
from tests.support.settings import make_settings
from tests.support.verifying import policy_snapshot, verifying

DOCS: list[dict[str, Any]] = [
    {"id": "public", "match": {"paths": [{"prefix": "/public/"}]}, "require": {"authenticated": False},
     "headers": {"x-tenant": "{claims.tenant}"}},
    {"id": "signed-in", "match": {"paths": [{"prefix": "/app/"}]}},
    {"id": "scoped", "match": {"paths": [{"prefix": "/orders/"}]},
     "require": {"scopes": ["orders:write", "read"]}},
    {"id": "groups", "match": {"paths": [{"prefix": "/admin/"}]},
     "require": {"claims": {"groups": ["sre", "payments-admin"]}}},
    {"id": "verified", "match": {"paths": [{"prefix": "/verified/"}]},
     "require": {"claims": {"email_verified": [True]}}},
    {"id": "nested", "match": {"paths": [{"prefix": "/realm/"}]},
     "require": {"claims": {"realm_access.roles": ["auditor"]}}},
    {"id": "issuer-only", "match": {"paths": [{"prefix": "/iss/"}]},
     "require": {"issuers": ["https://other.example.com"]}},
    {"id": "aud-only", "match": {"paths": [{"prefix": "/aud/"}]}, "require": {"audiences": ["billing"]}},
    {"id": "blocked", "match": {"paths": [{"prefix": "/internal/"}]}, "action": "deny"},
    {"id": "trial", "match": {"paths": [{"prefix": "/trial/"}]}, "mode": "dry-run",
     "require": {"scopes": ["nope"]}},
    {"id": "trial-deny", "match": {"paths": [{"prefix": "/trial-deny/"}]}, "mode": "dry-run",
     "action": "deny"},
    {"id": "tenant", "match": {"paths": [{"prefix": "/t/"}]},
     "headers": {"x-tenant": "{claims.tenant}", "x-org": "org-{claims.org.id}", "x-roles": "{claims.roles}"}},
]


@pytest.fixture
async def authorizer(issuer: LocalIssuer) -> AsyncIterator[Authorizer]:
    async with verifying(issuer, make_settings(issuer, default_action="deny")) as v:
        yield Authorizer(settings=v.settings, verifier=v.verifier,
                         policies=policy_snapshot(DOCS, v.clock))


def hdrs(decision: Decision) -> dict[str, str]:
    return dict(decision.upstream_headers)


async def test_a_public_route_allows_without_a_token(authorizer: Authorizer) -> None:
    d = await authorizer.check(req("/public/x"))
    assert d.allowed
    assert d.reason == "allowed_public"
    assert hdrs(d)["x-auth-policy"] == "public"


async def test_a_public_route_gives_identity_headers_for_a_valid_token(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    d = await authorizer.check(req("/public/x", issuer.mint("ES256")))
    assert d.allowed
    assert hdrs(d)["x-auth-subject"] == "alice"


async def test_a_public_route_ignores_a_bad_token(authorizer: Authorizer) -> None:
    d = await authorizer.check(req("/public/x", "garbage.token.here"))
    assert d.allowed
    assert "x-auth-subject" not in hdrs(d)


async def test_a_signed_in_route_needs_a_token(authorizer: Authorizer, issuer: LocalIssuer) -> None:
    assert (await authorizer.check(req("/app/x"))).status == 401
    assert (await authorizer.check(req("/app/x", issuer.mint("RS256")))).allowed


async def test_a_missing_scope_is_403_insufficient_scope(authorizer: Authorizer, issuer: LocalIssuer) -> None:
    d = await authorizer.check(req("/orders/1", issuer.mint("RS256", scope="read")))
    assert d.status == 403
    assert d.reason == "scope_missing"
    assert dict(d.response_headers)["www-authenticate"] == (
        'Bearer realm="extauthz", error="insufficient_scope", '
        'error_description="requirement not met: scope orders:write", scope="orders:write read"')
    assert json.loads(d.body) == {"error": "insufficient_scope",
                                  "error_description": "requirement not met: scope orders:write"}


async def test_scopes_from_scp_lists_count(authorizer: Authorizer, issuer: LocalIssuer) -> None:
    token = issuer.mint("RS256", scope=None, scp=["orders:write", "read"])
    assert (await authorizer.check(req("/orders/1", token))).allowed


@pytest.mark.parametrize(("groups", "allowed"), [(["dev", "sre"], True), (["payments-admin"], True),
                                                 (["dev"], False), ("sre", True)])
async def test_claims_accept_any_listed_value(
    authorizer: Authorizer, issuer: LocalIssuer, groups: object, allowed: bool
) -> None:
    d = await authorizer.check(req("/admin/x", issuer.mint("RS256", groups=groups)))
    assert d.allowed is allowed
    if not allowed:
        assert d.reason == "claim_mismatch"
        assert json.loads(d.body)["error_description"] == "requirement not met: claims.groups"


@pytest.mark.parametrize(("value", "allowed"), [(True, True), (False, False), (1, False), ("true", False)])
async def test_boolean_claims_match_booleans_only(
    authorizer: Authorizer, issuer: LocalIssuer, value: object, allowed: bool
) -> None:
    d = await authorizer.check(req("/verified/x", issuer.mint("RS256", email_verified=value)))
    assert d.allowed is allowed


async def test_dotted_claims_reach_nested_objects(authorizer: Authorizer, issuer: LocalIssuer) -> None:
    ok = issuer.mint("RS256", realm_access={"roles": ["auditor"]})
    assert (await authorizer.check(req("/realm/x", ok))).allowed
    assert not (await authorizer.check(req("/realm/x", issuer.mint("RS256")))).allowed


async def test_issuer_and_audience_requirements(authorizer: Authorizer, issuer: LocalIssuer) -> None:
    assert (await authorizer.check(req("/iss/x", issuer.mint("RS256")))).reason == "issuer_not_allowed"
    assert (await authorizer.check(req("/aud/x", issuer.mint("RS256")))).reason == "audience_not_allowed"


async def test_a_deny_policy_is_403_even_with_a_good_token(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    d = await authorizer.check(req("/internal/x", issuer.mint("RS256")))
    assert (d.status, d.reason, d.policy_id) == (403, "policy_denied", "blocked")


async def test_no_matching_policy_uses_the_default_action(authorizer: Authorizer) -> None:
    d = await authorizer.check(req("/elsewhere"))
    assert (d.status, d.reason) == (403, "no_policy")


async def test_dry_run_records_the_would_be_denial_and_decides_as_if_it_did_not_exist(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    # default_action deny here: without the trial policies these requests are denied, so they are
    d = await authorizer.check(req("/trial/x", issuer.mint("RS256")))
    assert (d.allowed, d.reason, d.dry_run, d.would_deny) == (False, "no_policy", True, "scope_missing")
    anonymous = await authorizer.check(req("/trial/x"))
    assert (anonymous.allowed, anonymous.would_deny) == (False, "token_missing")
    deny = await authorizer.check(req("/trial-deny/x", issuer.mint("RS256")))
    assert (deny.allowed, deny.would_deny) == (False, "policy_denied")


async def test_header_templates_fill_from_claims(authorizer: Authorizer, issuer: LocalIssuer) -> None:
    token = issuer.mint("RS256", tenant="acme", org={"id": 7}, roles=["a", "b"])
    d = await authorizer.check(req("/t/x", token, headers={"x-tenant": "evil", "x-org": "evil"}))
    assert hdrs(d)["x-tenant"] == "acme"
    assert hdrs(d)["x-org"] == "org-7"
    assert hdrs(d)["x-roles"] == "a,b"
    assert "x-tenant" not in d.remove_headers


async def test_a_missing_claim_leaves_the_header_out_and_removes_a_spoofed_copy(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    d = await authorizer.check(req("/t/x", issuer.mint("RS256"), headers={"x-tenant": "evil"}))
    assert "x-tenant" not in hdrs(d)
    assert "x-tenant" in d.remove_headers
    public = await authorizer.check(req("/public/x", headers={"x-tenant": "evil"}))
    assert "x-tenant" in public.remove_headers


async def test_a_policy_header_sent_by_the_client_is_removed_on_every_route(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    # x-tenant belongs to the "public" and "tenant" policies; /app/ matches neither
    d = await authorizer.check(req("/app/x", issuer.mint("RS256"),
                                   headers={"x-tenant": "victim", "x-org": "v"}))
    assert d.allowed
    assert {"x-tenant", "x-org"} <= set(d.remove_headers)


async def test_underscore_spellings_are_removed_by_extauthz_itself(
    authorizer: Authorizer, issuer: LocalIssuer
) -> None:
    view = req("/app/x", issuer.mint("RS256"))
    view = view._replace(headers={**view.headers, "x_auth_subject": "admin",
                                  "impersonate_user": "root", "x_tenant": "evil"})
    d = await authorizer.check(view)
    assert {"x_auth_subject", "impersonate_user", "x_tenant"} <= set(d.remove_headers)


async def test_credential_cookies_are_not_passed_to_the_upstream(issuer: LocalIssuer) -> None:
    settings = make_settings(issuer, token={"cookie": "session"}, default_action="authenticated")
    async with verifying(issuer, settings) as v:
        a = Authorizer(settings=settings, verifier=v.verifier, policies=policy_snapshot([], v.clock))
        token = issuer.mint("RS256")
        mixed = await a.check(req("/x", headers={"cookie": f"theme=dark; session={token}; "
                                                 "__Host-extauthz-stepup=abc; lang=en"}))
        assert mixed.allowed
        assert hdrs(mixed)["cookie"] == "theme=dark; lang=en"
        only = await a.check(req("/x", headers={"cookie": f"session={token}"}))
        assert "cookie" in only.remove_headers
        assert "cookie" not in hdrs(only)
        plain = await a.check(req("/x", token, headers={"cookie": "theme=dark"}))
        assert "cookie" not in plain.remove_headers
        assert "cookie" not in hdrs(plain)


async def test_each_dry_run_denial_is_counted_by_policy(issuer: LocalIssuer) -> None:
    settings = make_settings(issuer, default_action="deny")
    clock = FakeClock()
    counted: list[str] = []
    a = Authorizer(settings=settings, verifier=TokenVerifier(settings, {}, clock),
                   policies=policy_snapshot(DOCS, clock), on_dry_run=counted.append)
    assert not (await a.check(req("/trial/x"))).allowed
    assert not (await a.check(req("/trial-deny/x"))).allowed
    assert (await a.check(req("/public/x"))).allowed
    assert counted == ["trial", "trial-deny"]


async def test_policies_not_loaded_is_a_503_deny(issuer: LocalIssuer) -> None:
    settings = make_settings(issuer, default_action="allow")
    clock = FakeClock()
    authorizer = Authorizer(settings=settings, verifier=TokenVerifier(settings, {}, clock),
                            policies=PolicySnapshot(clock))
    d = await authorizer.check(req("/anything"))
    assert (d.allowed, d.status, d.reason) == (False, 503, "policies_unavailable")


async def test_a_policy_header_in_a_custom_identity_prefix_is_never_sent(issuer: LocalIssuer) -> None:
    settings = make_settings(issuer, default_action="deny", headers={"prefix": "x-user-"})
    docs = [{"id": "p", "match": {"paths": [{"prefix": "/app/"}]},
             "headers": {"x-user-subject": "{claims.tenant}", "x-tenant": "{claims.tenant}"}}]
    async with verifying(issuer, settings) as v:
        authorizer = Authorizer(settings=settings, verifier=v.verifier,
                                policies=policy_snapshot(docs, v.clock))
        d = await authorizer.check(req("/app/x", issuer.mint("RS256", tenant="admin")))
    assert d.allowed
    subjects = [v for k, v in d.upstream_headers if k == "x-user-subject"]
    assert subjects == ["alice"]  # ours alone, not the policy's "admin"
    assert hdrs(d)["x-tenant"] == "admin"


async def test_the_step_up_cookie_meets_only_policies_that_accept_webauthn(issuer: LocalIssuer) -> None:
    from extauthz.stepup.cookie import load_signing_key, new_signing_key_pem
    from extauthz.stepup.gate import StepupGate

    docs = [{"id": "ours", "match": {"paths": [{"prefix": "/ours/"}]}, "require": {"stepup": {}}},
            {"id": "idp-only", "match": {"paths": [{"prefix": "/idp/"}]},
             "require": {"stepup": {"acr_values": ["phr"]}}}]
    async with verifying(issuer) as v:
        keys = StepupGate(cookie_name=v.settings.stepup.cookie_name, lifetime=3600, clock=v.clock,
                          revocations=None)
        keys.use_key(load_signing_key(new_signing_key_pem(), "k"))
        assert keys.cookies is not None
        a = Authorizer(settings=v.settings, verifier=v.verifier, policies=policy_snapshot(docs, v.clock),
                       stepups=keys, clock=v.clock)
        token = issuer.mint("ES256")
        sent = {"cookie": f"{STEPUP_COOKIE}={keys.cookies.mint(await v.verifier.verify(token), 'cred')}",
                "accept": "application/json"}

        assert (await a.check(req("/ours/x", token, headers=sent))).allowed
        denied = await a.check(req("/idp/x", token, headers=sent))
        assert (denied.allowed, denied.status) == (False, 401)
        browser = await a.check(req("/idp/x", token, headers={**sent, "accept": "text/html"}))
        assert browser.status == 401  # no redirect to a ceremony that cannot satisfy it
