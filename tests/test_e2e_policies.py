"""Policies end to end: Envoy -> extauthz (embedded store) -> echo upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.requests import bearer
from tests.support.stack import ExtAuthz, Gateway, http_request

pytestmark = pytest.mark.e2e

POLICIES = """\
id: docs
match: {paths: [{prefix: /docs/}]}
require: {authenticated: false}
---
id: app
match: {paths: [{prefix: /app/}]}
headers: {x-tenant: "{claims.tenant}"}
---
id: orders
match: {paths: [{prefix: /orders/}], methods: [POST]}
require: {scopes: [orders:write]}
---
id: internal
match: {paths: [{prefix: /internal/}]}
action: deny
---
id: billing
match: {bound_only: true}
require: {scopes: [billing:read]}
---
id: admin
match: {paths: [{prefix: /admin/}]}
require: {claims: {groups: [sre]}}
---
id: users-trial
match: {paths: [{prefix: /admin/users/}]}
require: {scopes: ["users:admin"]}
mode: dry-run
"""


@pytest.fixture(scope="module")
def gw(idp: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("policies")
    (work / "policies.yaml").write_text(POLICIES)
    service = ExtAuthz(work, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{work}/policies.yaml"},
        "default_action": "deny",
        "audit": {"flush_interval": 0.05},
    }).start()
    gateway = Gateway(work, service).start()
    yield gateway
    gateway.stop()
    service.stop()


def test_a_public_route_needs_no_token(gw: Gateway) -> None:
    r = gw.get("/docs/intro")
    assert r.status == 200
    assert r.json()["headers"]["x-auth-policy"] == "docs"


def test_an_authenticated_route_adds_the_policy_header_and_templates(
    gw: Gateway, idp: LocalIssuer
) -> None:
    assert gw.get("/app/").status == 401
    r = gw.get("/app/", {**bearer(idp.mint("ES256", tenant="acme")), "x-tenant": "evil"})
    assert r.status == 200
    seen = r.json()["headers"]
    assert (seen["x-auth-policy"], seen["x-tenant"]) == ("app", "acme")
    r = gw.get("/app/", {**bearer(idp.mint("ES256")), "x-tenant": "evil"})
    assert "x-tenant" not in r.json()["headers"]


def test_a_scoped_route_answers_403_insufficient_scope(gw: Gateway, idp: LocalIssuer) -> None:
    def post(token: str) -> int:
        return http_request(gw.url + "/orders/1", method="POST", body=b"{}", headers=bearer(token)).status

    assert post(idp.mint("RS256", scope="read")) == 403
    assert post(idp.mint("RS256", scope="orders:write")) == 200
    r = gw.get("/orders/1", bearer(idp.mint("RS256", scope="read")))  # GET: no policy -> default deny
    assert r.status == 403
    assert r.json()["error_description"] == "no policy allows this request"


def test_a_denied_route_is_403_for_everyone(gw: Gateway, idp: LocalIssuer) -> None:
    r = gw.get("/internal/x", bearer(idp.mint("RS256")))
    assert r.status == 403
    assert r.json()["error_description"] == "policy internal denies this request"


def test_a_route_bound_policy_applies_whatever_the_path(gw: Gateway, idp: LocalIssuer) -> None:
    r = gw.get("/billing/invoices", bearer(idp.mint("RS256", scope="read")))
    assert r.status == 403
    assert 'scope="billing:read"' in r.headers["www-authenticate"]
    r = gw.get("/billing/invoices", bearer(idp.mint("RS256", scope="billing:read")))
    assert r.status == 200
    assert r.json()["headers"]["x-auth-policy"] == "billing"


def test_dot_segments_cannot_reach_a_denied_route(gw: Gateway, idp: LocalIssuer) -> None:
    for path in ("/docs/../internal/x", "/docs/%2e%2e/internal/x", "//internal/x"):
        r = gw.get(path, bearer(idp.mint("RS256")))
        assert r.status in (403, 404), path  # Envoy normalises first; extauthz again
        assert r.status != 200, path


def audit_record(gw: Gateway, path: str) -> dict[str, object]:
    """The audit line (JSON on extauthz's stdout) of the one request for ``path``."""
    log = gw.extauthz.workdir / f"extauthz-{gw.extauthz.grpc_port}.log"

    def record() -> str | None:
        return next((line for line in log.read_text().splitlines()
                     if line.startswith("{") and f'"path":"{path}"' in line), None)

    return dict(json.loads(until(record, 5, what=f"no audit record for {path}")))


def test_a_dry_run_policy_never_opens_its_subtree_through_envoy(gw: Gateway, idp: LocalIssuer) -> None:
    # Before: the dry-run branch allowed anyone (no token, an expired one) on /admin/users/*.
    assert gw.get("/admin/users/anonymous").status == 401
    record = audit_record(gw, "/admin/users/anonymous")
    assert (record["decision"], record["policy"], record["dry_run"], record["would_deny"]) == (
        "deny", "admin", True, "token_missing")
    now = int(time.time())
    expired = idp.mint("RS256", iat=now - 7200, exp=now - 3600)
    assert gw.get("/admin/users/1", bearer(expired)).status == 401
    assert gw.get("/admin/users/1", bearer(idp.mint("RS256", groups=["dev"]))).status == 403
    sre = gw.get("/admin/users/sre", bearer(idp.mint("RS256", groups=["sre"])))
    assert sre.status == 200
    assert sre.json()["headers"]["x-auth-policy"] == "admin"
    record = audit_record(gw, "/admin/users/sre")
    assert (record["decision"], record["dry_run"], record["would_deny"]) == (
        "allow", True, "scope_missing")
