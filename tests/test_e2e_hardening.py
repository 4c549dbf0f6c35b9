"""The reported bypasses, sent as an attacker sends them: raw HTTP/1.1 through the project's
own ``envoy/gateway.yaml`` (and a copy that keeps escaped slashes, as Envoy's default and
Istio's ``BASE`` normalisation do) to extauthz and an echo upstream."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.gateway import envoy_command, render_gateway
from demo.processes import Process
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port
from tests.support.stack import ExtAuthz, Gateway

pytestmark = pytest.mark.e2e

POLICIES = """\
id: root
match: {paths: [{prefix: /}]}
require: {authenticated: false}
---
id: docs
match: {paths: [{prefix: /docs/}]}
require: {authenticated: false}
---
id: admin
match: {paths: [{prefix: /admin/}]}
require: {claims: {groups: [sre]}}
---
id: internal
match: {paths: [{prefix: /internal/}]}
action: deny
---
id: payments
match: {paths: [{prefix: /payments/send/}]}
require: {stepup: {max_age: 300}}
---
id: secure
match: {hosts: [secure.example.com]}
action: deny
"""


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, target: str, headers: list[tuple[str, str]]) -> Answer:
    """One HTTP/1.1 request written byte for byte (repeated and odd headers included)."""
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [(k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)]
    if ("transfer-encoding", "chunked") in parsed:
        body = _dechunk(body)
    return Answer(int(status_line.split()[1]), parsed, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


@pytest.fixture(scope="module")
def stack(idp: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, int]]:
    """The gateway as shipped, and a second Envoy that keeps escaped slashes unchanged."""
    work = tmp_path_factory.mktemp("hardening")
    (work / "policies.yaml").write_text(POLICIES)
    service = ExtAuthz(work, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{work}/policies.yaml"},
        "token": {"cookie": "session"},
        "default_action": "deny",
    }).start()
    gateway = Gateway(work, service).start()
    keep = _keep_escaped_slashes_envoy(work, gateway)
    yield gateway, keep.port
    keep.process.stop()
    gateway.stop()
    service.stop()


@dataclass
class _Envoy:
    port: int
    process: Process


def _keep_escaped_slashes_envoy(work: Path, gateway: Gateway) -> _Envoy:
    port = free_port()
    config = render_gateway(listen_port=port, admin_port=free_port(),
                            grpc_port=gateway.extauthz.grpc_port,
                            http_port=gateway.extauthz.http_port,
                            upstream_port=gateway.upstream_port)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
    path = work / "gateway-keep-escaped.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = Process("envoy-keep", envoy_command(path), work / "envoy-keep.log").start()
    proc.wait_http(f"http://127.0.0.1:{port}/healthz")
    return _Envoy(port, proc)


def _host(name: str = "app.example.com") -> list[tuple[str, str]]:
    return [("Host", name)]


def _refused_as_a_bad_request(port: int, target: str) -> None:
    answer = raw_request(port, target, _host())
    assert answer.status == 400, (target, answer.status, answer.body[:200])
    assert answer.json()["error"] == "bad_request"


@pytest.mark.parametrize("target", [
    "/admin/%2e%2e;/docs/x", "/internal/%2e%2e;/docs/", "/payments/send/%2e%2e;/%2e%2e;/docs/",
    "/admin/%2E%2E%3B/docs/x", "/admin/%2e%2e;jsessionid=1/docs/x",
])
def test_dot_segments_behind_path_parameters_are_refused_through_envoy(
    stack: tuple[Gateway, int], target: str,
) -> None:
    gateway, _ = stack
    _refused_as_a_bad_request(gateway.port, target)


@pytest.mark.parametrize("target", [
    "/admin/x%2F..%2F..%2Fdocs/", "/admin/x%5C..%5C..%5Cdocs/", "/admin/x%2f..%2f..%2fdocs/",
    "/admin%2Fpublic-looking", "/docs%2F..%2Fadmin/x",
])
def test_escaped_separators_cannot_climb_where_the_proxy_keeps_them(
    stack: tuple[Gateway, int], target: str,
) -> None:
    _, keep_port = stack
    _refused_as_a_bad_request(keep_port, target)


def test_an_escaped_slash_inside_one_policy_passes_where_the_proxy_keeps_it(
    stack: tuple[Gateway, int],
) -> None:
    _, keep_port = stack
    answer = raw_request(keep_port, "/docs/a%2Fb", _host())
    assert answer.status == 200
    assert answer.json()["headers"]["x-auth-policy"] == "docs"


def test_the_shipped_gateway_redirects_escaped_slashes_before_any_check(
    stack: tuple[Gateway, int],
) -> None:
    gateway, _ = stack
    answer = raw_request(gateway.port, "/admin/x%2F..%2F..%2Fdocs/", _host())
    assert answer.status in (301, 302, 307, 308, 400), answer.status
    assert answer.status != 200


_PREFIX = {"root": "/", "docs": "/docs/", "admin": "/admin/", "internal": "/internal/",
           "payments": "/payments/send/"}


@pytest.mark.parametrize("target", [
    "/admin/..;/docs/x", "/admin/..;jsessionid=1/docs/x", "/admin/x\\..\\..\\docs/",
    "/admin/%2e%2e/docs/x", "/internal/./../docs/", "//admin//..//docs/",
])
def test_what_envoy_resolves_itself_is_checked_as_the_upstream_receives_it(
    stack: tuple[Gateway, int], target: str,
) -> None:
    """Envoy's own normalisation resolves these before the check; then the policy that
    decided must be the one for the path the upstream serves (or the request is refused)."""
    gateway, keep_port = stack
    for port in (gateway.port, keep_port):
        answer = raw_request(port, target, _host())
        if answer.status == 200:
            echoed = answer.json()
            policy = echoed["headers"]["x-auth-policy"]
            assert echoed["path"].startswith(_PREFIX[policy]), (target, echoed["path"], policy)
            assert not echoed["path"].startswith(("/admin/", "/internal/", "/payments/")), target
        else:
            assert answer.status in (400, 401, 403), (target, port, answer.status)


@pytest.mark.parametrize("host", [
    "secure.example.com:1:1", "secure.example.com:x", "secure.example.com:1:",
])
def test_a_malformed_authority_is_refused_not_split(stack: tuple[Gateway, int], host: str) -> None:
    gateway, _ = stack
    answer = raw_request(gateway.port, "/docs/x", _host(host))
    assert answer.status == 400, (host, answer.status, answer.body[:200])


def test_the_secure_host_is_denied_with_or_without_a_port(stack: tuple[Gateway, int]) -> None:
    gateway, _ = stack
    for host in ("secure.example.com", "secure.example.com:8000", "SECURE.example.com."):
        assert raw_request(gateway.port, "/docs/x", _host(host)).status == 403, host


def test_a_public_route_still_answers_200(stack: tuple[Gateway, int]) -> None:
    gateway, _ = stack
    answer = raw_request(gateway.port, "/docs/intro;jsessionid=1", _host())
    assert answer.status == 200
    assert answer.json()["headers"]["x-auth-policy"] == "docs"


# --- cookies -----------------------------------------------------------------------------
def test_a_token_cookie_in_two_cookie_lines_is_refused(stack: tuple[Gateway, int],
                                                         idp: LocalIssuer) -> None:
    gateway, _ = stack
    victim = idp.mint(sub="victim", groups=["sre"])
    attacker = idp.mint(sub="attacker", groups=["sre"])
    answer = raw_request(gateway.port, "/admin/x", [
        *_host(), ("Cookie", f"session={victim}"), ("Cookie", f"session={attacker}")])
    assert answer.status == 401
    assert answer.json()["error"] == "invalid_token"


def test_a_planted_comma_joined_session_cookie_is_refused(stack: tuple[Gateway, int],
                                                           idp: LocalIssuer) -> None:
    gateway, _ = stack
    victim = idp.mint(sub="victim", groups=["sre"])
    attacker = idp.mint(sub="attacker", groups=["sre"])
    answer = raw_request(gateway.port, "/admin/x", [
        *_host(), ("Cookie", f"pref=x, session={attacker}; session={victim}")])
    assert answer.status == 401


def test_a_token_cookie_in_a_second_cookie_line_never_reaches_the_upstream(
    stack: tuple[Gateway, int], idp: LocalIssuer,
) -> None:
    gateway, _ = stack
    token = idp.mint(sub="alice", groups=["sre"])
    answer = raw_request(gateway.port, "/admin/x", [
        *_host(), ("Cookie", "theme=dark"), ("Cookie", f"session={token}")])
    assert answer.status == 200, answer.body[:300]
    received = answer.json()["headers"]
    assert received["x-auth-subject"] == "alice"
    assert token not in json.dumps(received)
    assert "theme=dark" in json.dumps(received.get("cookie", ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
