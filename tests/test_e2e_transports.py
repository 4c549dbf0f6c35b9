"""One table of requests through both Check transports, each behind a real Envoy: the shipped
gRPC gateway (envoy/gateway.yaml) and the shipped HTTP gateway (envoy/gateway-http.yaml), both
in front of ONE extauthz process (it serves both ports) and one upstream that records raw
header lines. Every row must come out the same both ways: status, the challenge and redirect
headers, the body, and the exact header lines the upstream receives.

Where Envoy itself makes the transports differ, a test says so explicitly:
- a 5xx answer over HTTP is a failed check to Envoy: status_on_error, empty body
  (test_a_503_decision_keeps_its_body_over_grpc_only);
- a denied HEAD request: over HTTP the check's answer to HEAD has no body, and Envoy then
  drops its content-type (test_a_denied_head_request_loses_only_its_content_type_over_http);
- several Impersonate-Group values: gRPC keeps only the last, HTTP one line each
  (test_kube_apiserver_groups.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port, wait_for_port
from tests.support.raw_http import RawHttpServer, RawResponse, raw_exchange
from tests.support.stack import ExtAuthz, Gateway

pytestmark = pytest.mark.e2e

LOGIN = "https://login.example.com/start?rd={rd}"
HOST = "app.example.com"
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
match: {paths: [{prefix: /orders/}]}
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
id: payments
match: {paths: [{prefix: /payments/}]}
require: {stepup: {max_age: 300}}
---
id: secure
match: {hosts: [secure.example.com]}
action: deny
---
id: users-trial
match: {paths: [{regex: "^/v[0-9]+/users/[^/]+$"}]}
require: {scopes: ["users:read"]}
mode: dry-run
"""
# What the client sees besides status and body: the challenge, redirect and body headers.
CLIENT_HEADERS = ("www-authenticate", "location", "content-type", "cache-control", "retry-after")
# Upstream header lines whose value is new on every request (or names only the gRPC gateway
# lets through: x-extauthz-policy binds nothing over gRPC, and only the HTTP gateway strips it).
VOLATILE = {"x-request-id", "x-auth-decision-id"}
GRPC_ONLY = {"x-extauthz-policy"}


class Outcome(NamedTuple):
    status: int
    client_headers: tuple[tuple[str, str], ...]
    body: bytes
    upstream: tuple[tuple[str, str], ...] | None  # None: the upstream was not reached


@dataclass
class Stack:
    service: ExtAuthz
    upstream: RawHttpServer
    gateways: dict[str, Gateway]

    def outcome(self, transport: str, method: str, target: str,
                headers: list[tuple[str, str]]) -> Outcome:
        before = len(self.upstream.requests)
        r: RawResponse = raw_exchange(self.gateways[transport].port, target,
                                      [("host", HOST), *headers], method=method)
        reached = self.upstream.requests[before:]
        assert len(reached) <= 1
        upstream = None
        if reached:
            upstream = tuple(sorted(
                (k.lower(), "<volatile>" if k.lower() in VOLATILE else v)
                for k, v in reached[0].lines if k.lower() not in GRPC_ONLY))
        client = tuple((k, v) for k, v in r.lines if k in CLIENT_HEADERS)
        # An allow's body is the upstream's echo of what it received: compared as ``upstream``.
        return Outcome(r.status, client, b"<upstream's>" if reached else r.body, upstream)


@pytest.fixture(scope="module")
def stack(idp: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("transports")
    (work / "policies.yaml").write_text(POLICIES)
    service = ExtAuthz(work, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{work}/policies.yaml"},
        "default_action": "authenticated",
        "login_url": LOGIN,
        "realm": "example",
        "token": {"cookie": "session"},
        "check_http": {"route_header": "x-extauthz-policy"},
    }).start()
    upstream = RawHttpServer().start()
    gateways: dict[str, Gateway] = {}
    try:
        for transport in ("grpc", "http"):
            gateways[transport] = Gateway(work, service, transport=transport, echo=False,
                                          upstream_port=upstream.port).start()
        yield Stack(service, upstream, gateways)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        upstream.stop()
        service.stop()


Headers = Callable[[LocalIssuer], list[tuple[str, str]]]


def _bearer(**claims: Any) -> Headers:
    return lambda idp: [("authorization", f"Bearer {idp.mint('ES256', **claims)}")]


def _with(first: Headers, *more: tuple[str, str]) -> Headers:
    return lambda idp: [*first(idp), *more]


def _none(idp: LocalIssuer) -> list[tuple[str, str]]:
    return []


BROWSER = ("accept", "text/html,application/xhtml+xml")
API = ("accept", "application/json")


class Row(NamedTuple):
    name: str
    target: str
    headers: Headers
    status: int
    method: str = "GET"


TABLE = [
    Row("allow with identity headers", "/hello?x=1", _bearer(), 200),
    Row("spoofed identity and impersonation headers are stripped", "/hello",
        _with(_bearer(), ("x-auth-subject", "admin"), ("x-auth-groups", "root"),
              ("x-auth-acr", "phr"), ("x-auth-policy", "docs"), ("impersonate-user", "system:admin"),
              ("impersonate-group", "system:masters"), ("impersonate-extra-scopes", "all"),
              ("x-remote-user", "root"), ("x-remote-extra-x", "y")), 200),
    Row("the credential cookie is rewritten away, other cookies pass",
        "/hello", lambda idp: [("cookie", f"theme=dark; session={idp.mint('RS256')}; lang=en")], 200),
    Row("a cookie holding only the credential is removed", "/hello",
        lambda idp: [("cookie", f"session={idp.mint('RS256')}")], 200),
    Row("a forwarded authorization header is removed", "/hello",
        _with(_bearer(), ("cookie", "theme=dark")), 200),
    Row("no token: 401 with a Bearer challenge", "/hello", lambda idp: [API], 401),
    Row("a bad token: 401 invalid_token", "/hello", _bearer(aud="other-api"), 401),
    Row("an expired token: 401 invalid_token", "/hello", _bearer(exp=1_000_000), 401),
    Row("insufficient scope: 403", "/orders/1", _bearer(scope="read"), 403),
    Row("enough scope: 200", "/orders/1", _bearer(scope="orders:write"), 200),
    Row("a deny policy: 403", "/internal/x", _bearer(), 403),
    Row("a public route needs no token", "/docs/intro", _none, 200),
    Row("a public route with a token still gets identity headers", "/docs/intro", _bearer(), 200),
    Row("a browser without a token is sent to the login URL", "/app/page?tab=2",
        lambda idp: [BROWSER], 302),
    Row("a browser needing step-up is sent to the ceremony", "/payments/send?amount=5",
        lambda idp: [BROWSER, ("cookie", f"session={idp.mint('RS256')}")], 302),
    Row("an API client needing step-up gets the RFC 9470 challenge", "/payments/send",
        _with(_bearer(), API), 401),
    Row("an ambiguous path is refused with 400", "/internal/%2e%2e;/docs/", _bearer(), 400),
    Row("a dry-run policy never decides: no token is still 401", "/v1/users/bob",
        lambda idp: [API], 401),
    Row("a dry-run policy never decides: a token without its scope passes", "/v1/users/bob",
        _bearer(scope="read"), 200),
    Row("a policy's template header is set and a client copy replaced", "/app/x",
        _with(_bearer(tenant="acme"), ("x-tenant", "evil")), 200),
    Row("a policy's template header with no value removes a client copy", "/app/x",
        _with(_bearer(), ("x-tenant", "evil")), 200),
    Row("a route-bound policy applies on its route: missing scope", "/billing/invoices",
        _bearer(scope="read"), 403),
    Row("a route-bound policy applies on its route: with its scope", "/billing/invoices",
        _bearer(scope="billing:read"), 200),
    Row("a client cannot bind a route's policy by header", "/hello",
        lambda idp: [API, ("x-extauthz-policy", "docs")], 401),
    Row("a client cannot rebind a bound route by header", "/billing/invoices",
        _with(_bearer(scope="read"), ("x-extauthz-policy", "docs")), 403),
    Row("an allowed HEAD request", "/hello", _bearer(), 200, "HEAD"),
    Row("an allowed POST", "/orders/1", _bearer(scope="orders:write"), 200, "POST"),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_both_transports_give_the_same_outcome(stack: Stack, idp: LocalIssuer, row: Row) -> None:
    headers = row.headers(idp)  # one token for both: the same request twice
    grpc = stack.outcome("grpc", row.method, row.target, headers)
    http = stack.outcome("http", row.method, row.target, headers)
    assert grpc.status == row.status, grpc
    assert http == grpc


def test_a_denied_head_request_loses_only_its_content_type_over_http(stack: Stack) -> None:
    # Envoy sends the check with the client's method. An HTTP answer to HEAD carries no body,
    # and Envoy's local reply with an empty body leaves content-type out; over gRPC the denial's
    # body arrives and only the client's HEAD drops it. Nothing the client could use differs.
    grpc = stack.outcome("grpc", "HEAD", "/hello", [API])
    http = stack.outcome("http", "HEAD", "/hello", [API])
    assert (grpc.status, grpc.body, grpc.upstream) == (http.status, http.body, http.upstream) == (
        401, b"", None)
    assert grpc.client_headers == (("www-authenticate", 'Bearer realm="example"'),
                                   ("content-type", "application/json"))
    assert http.client_headers == (("www-authenticate", 'Bearer realm="example"'),)


def _host_outcome(stack: Stack, transport: str, host: str, idp: LocalIssuer) -> Outcome:
    r = raw_exchange(stack.gateways[transport].port, "/docs/x",
                     [("host", host), ("authorization", f"Bearer {idp.mint('RS256')}")])
    return Outcome(r.status, tuple((k, v) for k, v in r.lines if k in CLIENT_HEADERS), r.body, None)


@pytest.mark.parametrize("host", ["secure.example.com", "secure.example.com:8443",
                                  "secure.example.com:1:1", "secure.example.com:x"])
def test_both_transports_decide_the_host_alike(stack: Stack, idp: LocalIssuer, host: str) -> None:
    grpc = _host_outcome(stack, "grpc", host, idp)
    assert grpc.status in (400, 403), grpc
    assert _host_outcome(stack, "http", host, idp) == grpc


def test_what_the_upstream_receives_on_an_allow(stack: Stack, idp: LocalIssuer) -> None:
    """The table compares the transports with each other; this pins what both send."""
    for transport in ("grpc", "http"):
        out = stack.outcome(transport, "GET", "/app/x", [
            ("authorization", f"Bearer {idp.mint('ES256', tenant='acme')}"),
            ("cookie", f"theme=dark; session={idp.mint('RS256')}"),
            ("x-auth-subject", "admin"), ("x-auth-acr", "phr"), ("x-remote-user", "root"),
            ("x-remote-extra-x", "y"), ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"), ("impersonate-extra-scopes", "all"),
            ("x-tenant", "evil")])
        assert out.upstream is not None
        lines = dict(out.upstream)
        assert [k for k, _ in out.upstream].count("x-auth-subject") == 1
        assert (lines["x-auth-subject"], lines["x-auth-policy"], lines["x-tenant"]) == (
            "alice", "app", "acme"), transport
        assert lines["cookie"] == "theme=dark"
        assert not {"authorization", "x-auth-acr", "x-remote-user", "x-remote-extra-x",
                    "impersonate-user", "impersonate-group", "impersonate-extra-scopes"} & set(lines)


def test_a_client_route_header_never_binds_a_policy_over_http(stack: Stack, idp: LocalIssuer) -> None:
    # docs is public: were the header believed, no token would be needed.
    r = raw_exchange(stack.gateways["http"].port, "/hello",
                     [("host", HOST), API, ("x-extauthz-policy", "docs")])
    assert r.status == 401
    r = raw_exchange(stack.gateways["http"].port, "/billing/x",
                     [("host", HOST), API, ("x-extauthz-policy", "docs"),
                      ("x-extauthz-policy", "docs")])
    assert r.status == 401  # still billing's: a token is needed


def test_with_extauthz_stopped_both_gateways_fail_closed_alike(
    idp: LocalIssuer, tmp_path: Path,
) -> None:
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                                  "default_action": "authenticated"}).start()
    gateways = [Gateway(tmp_path, service, transport=t).start() for t in ("grpc", "http")]
    try:
        token = [("authorization", f"Bearer {idp.mint('RS256')}")]
        for gateway in gateways:
            assert raw_exchange(gateway.port, "/", [("host", HOST), *token]).status == 200
        assert service.stop() == 0
        for gateway in gateways:
            r = raw_exchange(gateway.port, "/", [("host", HOST), *token])
            assert (r.status, r.body) == (503, b""), gateway.transport
    finally:
        for gateway in gateways:
            gateway.stop()


def test_a_503_decision_keeps_its_body_over_grpc_only(idp: LocalIssuer, tmp_path: Path) -> None:
    """extauthz denies with 503 when an issuer's keys cannot be had. Over gRPC that denial
    reaches the client as sent; over HTTP Envoy takes any 5xx answer for a failed check and
    answers status_on_error (503) itself, with an empty body and no Retry-After."""
    dead = f"http://127.0.0.1:{free_port()}"  # an issuer whose discovery nobody serves
    service = ExtAuthz(tmp_path, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]},
                    {"issuer": dead, "audiences": [AUDIENCE]}],
        "default_action": "authenticated"}).start(wait_ready=False)  # never ready: keys missing
    wait_for_port(service.grpc_port, 30)
    wait_for_port(service.check_http_port, 30)
    gateways = {t: Gateway(tmp_path, service, transport=t).start() for t in ("grpc", "http")}
    try:
        token = [("host", HOST), ("authorization", f"Bearer {idp.mint('RS256', iss=dead)}")]
        grpc = raw_exchange(gateways["grpc"].port, "/", token)
        assert grpc.status == 503
        assert grpc.json()["error"] == "temporarily_unavailable"
        assert grpc.values("retry-after") == ["1"]
        http = raw_exchange(gateways["http"].port, "/", token)
        assert (http.status, http.body, http.values("retry-after")) == (503, b"", [])
    finally:
        for gateway in gateways.values():
            gateway.stop()
        service.stop()
