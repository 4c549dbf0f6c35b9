"""What a check is asked about, built for tests: a Check request on the wire, the request view
the authorizer reads, and a verified identity. Each builder fills in the fields a test does not
care about, so a test names only the ones it is about."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from envoy_data_plane.envoy.service.auth.v3 import (
    AttributeContext,
    AttributeContextHttpRequest,
    AttributeContextRequest,
    CheckRequest,
)

from extauthz.identity.model import Identity
from extauthz.request import RequestView

CHECK = "/envoy.service.auth.v3.Authorization/Check"  # the gRPC method, for raw-bytes calls
STEPUP_COOKIE = "__Host-extauthz-stepup"  # the step-up cookie's default name


def check_request(headers: Mapping[str, str], path: str = "/", method: str = "GET",
                  context: Mapping[str, str] | None = None) -> bytes:
    """A serialized ``CheckRequest`` as Envoy sends it, encoded with envoy-data-plane
    (betterproto2), independently of the grpcio-tools stubs the service decodes with."""
    http = AttributeContextHttpRequest(method=method, path=path, host="api.example.com",
                                       scheme="https", headers=dict(headers), id="req-1")
    attrs = AttributeContext(request=AttributeContextRequest(http=http),
                             context_extensions=dict(context or {}))
    return bytes(CheckRequest(attributes=attrs))


def bearer(token: str | None, **headers: str) -> dict[str, str]:
    """Request headers carrying ``token`` (none when it is None), plus any others."""
    return {**({"authorization": f"Bearer {token}"} if token else {}), **headers}


def request_view(path: str = "/", token: str | None = None, *, method: str = "GET",
                 host: str = "api.example.com", query: str = "",
                 headers: Mapping[str, str] | None = None, bound: str | None = None,
                 source_address: str = "", request_id: str = "") -> RequestView:
    """The view the authorizer reads, as the Check adapter would make it: an https request
    with ``token`` as its bearer, and ``bound`` as the route's ``policy`` context extension."""
    return RequestView(method=method, scheme="https", host=host, path=path, query=query,
                       headers=bearer(token, **(headers or {})),
                       context_extensions={"policy": bound} if bound else {},
                       source_address=source_address, request_id=request_id)


def identity(subject: str = "alice", *, issuer: str = "https://idp.example.com",
             username: str | None = None, email: str | None = None,
             audiences: tuple[str, ...] = (), groups: tuple[str, ...] = (),
             scopes: tuple[str, ...] = (), client_id: str | None = None, acr: str | None = None,
             auth_time: int | None = None, jti: str | None = None,
             issued_at: float | None = None, expires_at: float = 9e9,
             claims: Mapping[str, Any] | None = None) -> Identity:
    """A verified identity, as the token verifier hands it on; ``username`` defaults to the
    subject, and the token never expires unless ``expires_at`` says when."""
    return Identity(issuer=issuer, subject=subject,
                    username=subject if username is None else username, email=email,
                    audiences=audiences, groups=groups, scopes=scopes, client_id=client_id,
                    acr=acr, auth_time=auth_time, jti=jti, issued_at=issued_at,
                    expires_at=expires_at, claims=MappingProxyType(dict(claims or {})))
