"""CheckRequest bodies as Envoy sends them, framed for gRPC, for h2load to replay; and the
headers of the same check over plain HTTP, for wrk.

Realistic attributes: source and destination addresses, ten request headers (Envoy's
pseudo-headers, a browser-like user-agent and accept, x-request-id, x-forwarded-*), and
an ~800-byte bearer token.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from extauthz.pb.envoy.config.core.v3 import address_pb2
from extauthz.pb.envoy.service.auth.v3 import attribute_context_pb2 as ac
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def check_request(
    *,
    host: str,
    path: str,
    method: str = "GET",
    token: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> ext.CheckRequest:
    headers = {
        ":authority": host,
        ":path": path,
        ":method": method,
        ":scheme": "https",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        "accept": "application/json",
        "x-request-id": "6f1c7b9e-2d4a-4b8e-9f3a-1c2d3e4f5a6b",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-proto": "https",
        "x-envoy-expected-rq-timeout-ms": "30000",
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    headers.update(extra_headers or {})
    http = ac.AttributeContext.HttpRequest(
        id="6f1c7b9e2d4a",
        method=method,
        headers=headers,
        path=path,
        host=host,
        scheme="https",
        protocol="HTTP/1.1",
    )
    attrs = ac.AttributeContext(
        source=ac.AttributeContext.Peer(address=_address("203.0.113.7", 51234)),
        destination=ac.AttributeContext.Peer(address=_address("10.0.0.5", 8000)),
        request=ac.AttributeContext.Request(http=http),
    )
    return ext.CheckRequest(attributes=attrs)


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: a zero (uncompressed) flag byte and a 4-byte length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def http_check_headers(token: str | None) -> list[tuple[str, str]]:
    """The headers Envoy's ``http_service`` sends with a check (besides Host, the original
    authority) under envoy/gateway-http.yaml's ``allowed_headers``: the ones ``check_request``
    carries that it forwards, and the bearer token."""
    headers = [
        ("Accept", "application/json"),
        ("X-Request-Id", "6f1c7b9e-2d4a-4b8e-9f3a-1c2d3e4f5a6b"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
    ]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return headers
