"""What a real Envoy does with envoy/gateway-http.yaml's HTTP ext_authz settings, measured with a
scripted check server (not extauthz: a stand-in that answers what each test asks for) and an
upstream that records raw header lines. These are the facts the shipped file and extauthz's
HTTP answers rely on; if a new Envoy changes one, this file says which."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from demo.gateway import GATEWAY_HTTP, envoy_command, render_gateway
from demo.processes import Process
from tests.support.ports import free_port
from tests.support.raw_http import RawAnswer, RawHttpServer, RawRequest
from tests.support.stack import Response, http_request

pytestmark = pytest.mark.e2e

CHALLENGE = 'Bearer realm="example", error="invalid_token"'
SCRIPT: dict[str, RawAnswer] = {
    "/groups": RawAnswer(200, (("x-auth-subject", "alice"), ("impersonate-user", "idp:alice"),
                               ("impersonate-group", "idp:sre"), ("impersonate-group", "idp:dev"),
                               ("impersonate-group", "idp:ops"))),
    "/cookie": RawAnswer(200, (("x-auth-subject", "alice"), ("cookie", "theme=dark"),
                               ("x-envoy-auth-headers-to-remove", "x-auth-acr, authorization"))),
    "/set-and-remove": RawAnswer(200, (("x-auth-subject", "alice"),
                                       ("x-envoy-auth-headers-to-remove", "x-auth-subject"))),
    "/not-listed": RawAnswer(200, (("x-auth-subject", "alice"), ("x-unlisted", "1"))),
    "/deny": RawAnswer(401, (("www-authenticate", CHALLENGE), ("content-type", "application/json"),
                             ("cache-control", "no-store"), ("x-auth-subject", "leak"),
                             ("x-unlisted", "1")), b'{"error":"invalid_token"}'),
    "/redirect": RawAnswer(302, (("location", "/.extauthz/stepup?rd=%2Fpay"),
                                 ("cache-control", "no-store"))),
    "/fail": RawAnswer(503, (("content-type", "application/json"), ("retry-after", "1")),
                       b'{"error":"unavailable"}'),
}


def _script(request: RawRequest) -> RawAnswer:
    path = request.target.split("?")[0].removeprefix("/billing")
    return SCRIPT.get(path, RawAnswer(200, (("x-auth-subject", "alice"),)))


class Stack:
    def __init__(self, work: Path) -> None:
        self.check = RawHttpServer(_script).start()
        self.upstream = RawHttpServer().start()
        self.port = free_port()
        config = render_gateway(listen_port=self.port, admin_port=free_port(), grpc_port=free_port(),
                                http_port=free_port(), upstream_port=self.upstream.port,
                                check_http_port=self.check.port, source=GATEWAY_HTTP)
        path = work / "gateway-http.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.envoy = Process("envoy", envoy_command(path), work / "envoy.log").start()
        self.envoy.wait_http(f"http://127.0.0.1:{self.port}/healthz")

    def request(self, path: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> Response:
        return http_request(f"http://127.0.0.1:{self.port}{path}", method=method, headers=headers)

    def stop(self) -> None:
        self.envoy.stop()
        self.check.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("envoy-http"))
    yield s
    s.stop()


def test_the_check_receives_the_headers_extauthz_reads_and_not_the_rest(stack: Stack) -> None:
    stack.request("/hello?x=1", {
        "authorization": "Bearer t", "cookie": "session=s", "accept": "text/html",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7", "x-auth-subject": "admin",
        "impersonate-user": "system:admin", "impersonate-extra-scopes": "all",
        "x-remote-extra-x": "y", "x-tenant": "evil", "x-unrelated": "no", "user-agent": "ua"})
    seen = stack.check.last()
    assert (seen.method, seen.target) == ("GET", "/hello?x=1")  # the original path and query
    for name, value in (("authorization", "Bearer t"), ("cookie", "session=s"),
                        ("accept", "text/html"), ("x-auth-subject", "admin"),
                        ("impersonate-user", "system:admin"), ("impersonate-extra-scopes", "all"),
                        ("x-remote-extra-x", "y"), ("x-tenant", "evil"),
                        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                        ("x-forwarded-proto", "http")):
        assert seen.values(name) == [value], name
    assert seen.values("host") == [f"127.0.0.1:{stack.port}"]  # the original authority
    assert seen.values("traceparent")  # Envoy may continue the trace: present, not equal
    assert seen.values("x-request-id")  # Envoy's own, for the audit trail
    assert seen.values("content-length") == ["0"]  # never a body
    assert not {"x-unrelated", "user-agent"} & seen.names()


def test_a_client_sent_route_header_never_reaches_the_check(stack: Stack) -> None:
    stack.request("/hello", {"x-extauthz-policy": "public"})
    assert stack.check.last().values("x-extauthz-policy") == []
    stack.request("/billing/invoices", {"x-extauthz-policy": "public"})
    assert stack.check.last().values("x-extauthz-policy") == ["billing"]
    assert "x-extauthz-policy" not in stack.upstream.last().names()  # for the check only


def test_each_impersonate_group_line_reaches_the_upstream_as_its_own_line(stack: Stack) -> None:
    stack.request("/groups", {"impersonate-group": "system:masters",
                              "impersonate-user": "system:admin"})
    got = stack.upstream.last()
    assert got.values("impersonate-group") == ["idp:sre", "idp:dev", "idp:ops"]
    assert got.values("impersonate-user") == ["idp:alice"]
    assert got.values("x-auth-subject") == ["alice"]
    assert "impersonate-group" not in stack.check.last().names()  # stripped before the check


def test_answer_headers_replace_client_copies_and_named_headers_are_removed(stack: Stack) -> None:
    stack.request("/cookie", {"x-auth-subject": "admin", "x-auth-acr": "phr",
                              "authorization": "Bearer t", "cookie": "session=s; theme=dark"})
    got = stack.upstream.last()
    assert got.values("x-auth-subject") == ["alice"]
    assert got.values("cookie") == ["theme=dark"]  # the credential cookie rewritten away
    assert not {"x-auth-acr", "authorization", "x-envoy-auth-headers-to-remove"} & got.names()


def test_a_header_named_for_removal_goes_even_when_the_answer_sets_it(stack: Stack) -> None:
    # Removal runs after the answer's headers are applied: extauthz must never name a header it
    # sets (it does not: identity_headers.headers_to_remove leaves out its own).
    stack.request("/set-and-remove", {"x-auth-subject": "admin"})
    assert "x-auth-subject" not in stack.upstream.last().names()


def test_answer_headers_not_listed_never_reach_the_upstream(stack: Stack) -> None:
    r = stack.request("/not-listed", {"x-unlisted": "client"})
    assert r.status == 200
    got = stack.upstream.last()
    assert got.values("x-unlisted") == ["client"]  # the client's, untouched: not ours to set
    assert got.values("x-auth-subject") == ["alice"]


def test_a_denial_reaches_the_client_with_its_challenge_and_body_and_nothing_else(
    stack: Stack,
) -> None:
    before = len(stack.upstream.requests)
    r = stack.request("/deny")
    assert (r.status, r.body) == (401, b'{"error":"invalid_token"}')
    assert r.headers["www-authenticate"] == CHALLENGE
    assert (r.headers["content-type"], r.headers["cache-control"]) == ("application/json", "no-store")
    assert not {"x-auth-subject", "x-unlisted"} & set(r.headers)
    assert len(stack.upstream.requests) == before


def test_a_redirect_keeps_its_location(stack: Stack) -> None:
    r = stack.request("/redirect", {"accept": "text/html"})
    assert (r.status, r.headers["location"]) == (302, "/.extauthz/stepup?rd=%2Fpay")
    assert r.headers["cache-control"] == "no-store"


def test_a_5xx_answer_becomes_status_on_error_and_loses_its_headers_and_body(stack: Stack) -> None:
    # Envoy treats any 5xx from an HTTP check server as a failed check: the client gets
    # status_on_error (503) with Envoy's empty body, not extauthz's JSON or Retry-After.
    r = stack.request("/fail")
    assert (r.status, r.body) == (503, b"")
    assert not {"retry-after", "content-type"} & set(r.headers)


def test_a_head_request_is_checked_as_a_head_request(stack: Stack) -> None:
    r = stack.request("/deny", method="HEAD")
    assert stack.check.last().method == "HEAD"
    assert (r.status, r.body, r.headers["www-authenticate"]) == (401, b"", CHALLENGE)
    r = stack.request("/hello", method="HEAD")
    assert r.status == 200
    assert stack.upstream.last().method == "HEAD"


def test_a_request_body_is_not_sent_to_the_check(stack: Stack) -> None:
    r = http_request(f"http://127.0.0.1:{stack.port}/hello", method="POST", body=b"x" * 5000)
    assert r.status == 200
    assert stack.check.last().body == b""
    assert stack.upstream.last().body == b"x" * 5000


def test_with_the_check_server_down_envoy_fails_closed(tmp_path: Path) -> None:
    s = Stack(tmp_path)
    try:
        s.check.stop()
        r = s.request("/hello", {"authorization": "Bearer t"})
        assert (r.status, r.body) == (503, b"")
        assert s.upstream.requests == []
    finally:
        s.stop()
