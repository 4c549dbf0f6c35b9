"""Dry-run policies: evaluated, logged and counted, and never part of the decision."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from extauthz.authorize import Authorizer
from tests.support.issuer import LocalIssuer
from tests.support.requests import request_view as req
from tests.support.settings import make_settings
from tests.support.verifying import policy_snapshot, verifying

ADMIN = {"id": "admin", "match": {"paths": [{"prefix": "/admin/"}]},
         "require": {"claims": {"groups": ["sre"]}}}
USERS_TRIAL = {"id": "users-trial", "match": {"paths": [{"prefix": "/admin/users/"}]},
               "require": {"scopes": ["users:admin"]}, "mode": "dry-run"}
DOCS: list[dict[str, Any]] = [
    ADMIN, USERS_TRIAL,
    {"id": "trial", "match": {"paths": [{"prefix": "/trial/"}]}, "mode": "dry-run",
     "require": {"scopes": ["nope"]}},
    {"id": "trial-deny", "match": {"paths": [{"prefix": "/public/closed/"}]}, "mode": "dry-run",
     "action": "deny"},
    {"id": "public", "match": {"paths": [{"prefix": "/public/"}]}, "require": {"authenticated": False}},
    {"id": "billing-trial", "match": {"bound_only": True}, "mode": "dry-run",
     "require": {"scopes": ["billing:read"]}},
]

MakeAuthorizer = Callable[..., Authorizer]


@pytest.fixture
async def make(issuer: LocalIssuer) -> AsyncIterator[MakeAuthorizer]:
    async with verifying(issuer, load=False) as v:  # the first token fetches the keys

        def build(default_action: str = "deny", counted: list[str] | None = None) -> Authorizer:
            return Authorizer(settings=make_settings(issuer, default_action=default_action),
                              verifier=v.verifier, policies=policy_snapshot(DOCS, v.clock),
                              on_dry_run=counted.append if counted is not None else None)

        yield build


async def test_a_dry_run_policy_inside_an_enforced_subtree_lets_no_one_through(
    make: MakeAuthorizer, issuer: LocalIssuer
) -> None:
    # Before: the dry-run branch allowed the request whatever the trial would have said, even
    # with no token, so /admin/users/* was open to anyone.
    counted: list[str] = []
    a = make(counted=counted)
    anonymous = await a.check(req("/admin/users/1"))
    assert (anonymous.allowed, anonymous.status, anonymous.reason, anonymous.policy_id) == (
        False, 401, "token_missing", "admin")
    assert (anonymous.dry_run, anonymous.would_deny) == (True, "token_missing")

    now = int(time.time())
    expired = await a.check(req("/admin/users/1", issuer.mint("RS256", iat=now - 7200, exp=now - 3600)))
    assert (expired.allowed, expired.status, expired.policy_id) == (False, 401, "admin")

    dev = await a.check(req("/admin/users/1", issuer.mint("RS256", groups=["dev"])))
    assert (dev.allowed, dev.status, dev.reason) == (False, 403, "claim_mismatch")
    assert counted == ["users-trial"] * 3


async def test_the_enforcing_policy_decides_and_the_trial_is_recorded_beside_it(
    make: MakeAuthorizer, issuer: LocalIssuer
) -> None:
    counted: list[str] = []
    a = make(counted=counted)
    sre = await a.check(req("/admin/users/1", issuer.mint("RS256", groups=["sre"], scope="read")))
    assert (sre.allowed, sre.reason, sre.policy_id, sre.description) == (
        True, "allowed", "admin", "allowed")
    assert dict(sre.upstream_headers)["x-auth-policy"] == "admin"
    assert (sre.dry_run, sre.would_deny) == (True, "scope_missing")
    assert counted == ["users-trial"]

    ok = await a.check(req("/admin/users/1", issuer.mint("RS256", groups=["sre"], scope="users:admin")))
    assert (ok.allowed, ok.policy_id, ok.dry_run, ok.would_deny) == (True, "admin", True, None)
    assert counted == ["users-trial"]  # a would-be allow is recorded, not counted as a denial

    outside = await a.check(req("/admin/stats", issuer.mint("RS256", groups=["sre"])))
    assert (outside.allowed, outside.dry_run, outside.would_deny) == (True, False, None)


@pytest.mark.parametrize(("default_action", "status", "reason"), [
    ("deny", 403, "no_policy"), ("authenticated", 401, "token_missing"),
])
async def test_with_no_enforcing_match_the_default_action_decides(
    make: MakeAuthorizer, default_action: str, status: int, reason: str
) -> None:
    d = await make(default_action).check(req("/trial/x"))
    assert (d.allowed, d.status, d.reason, d.policy_id) == (False, status, reason, None)
    assert (d.dry_run, d.would_deny) == (True, "token_missing")


async def test_a_signed_in_caller_passes_a_failing_trial_where_the_default_allows_them(
    make: MakeAuthorizer, issuer: LocalIssuer
) -> None:
    d = await make("authenticated").check(req("/trial/x", issuer.mint("RS256")))
    assert (d.allowed, d.reason, d.policy_id) == (True, "allowed", None)
    assert (d.dry_run, d.would_deny) == (True, "scope_missing")


async def test_a_dry_run_deny_policy_leaves_a_public_route_public(
    make: MakeAuthorizer, issuer: LocalIssuer
) -> None:
    counted: list[str] = []
    a = make(counted=counted)
    d = await a.check(req("/public/closed/x"))
    assert (d.allowed, d.reason, d.policy_id, d.would_deny) == (
        True, "allowed_public", "public", "policy_denied")
    signed_in = await a.check(req("/public/closed/x", issuer.mint("RS256")))
    assert dict(signed_in.upstream_headers)["x-auth-subject"] == "alice"
    assert counted == ["trial-deny", "trial-deny"]


async def test_a_route_bound_to_a_dry_run_policy_is_denied_as_if_the_policy_did_not_exist(
    make: MakeAuthorizer, issuer: LocalIssuer
) -> None:
    # Fail closed: the route names that one policy; it never decides, so nothing else may.
    counted: list[str] = []
    a = make(default_action="allow", counted=counted)
    good = issuer.mint("RS256", scope="billing:read")
    for token, would_deny in ((None, "token_missing"), (good, None)):
        d = await a.check(req("/billing/x", token, bound="billing-trial"))
        assert (d.allowed, d.status, d.reason) == (False, 403, "policy_unknown")
        assert d.description == ("the route is bound to policy billing-trial, which is in dry-run "
                                 "mode and never decides")
        assert (d.dry_run, d.would_deny) == (True, would_deny)
    assert counted == ["billing-trial"]
