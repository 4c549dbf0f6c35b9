"""The Envoy configurations the benchmark runs, every one through ONE Envoy worker:

- the shipped gateways, ``envoy/gateway.yaml`` (ext_authz over gRPC) and
  ``envoy/gateway-http.yaml`` (ext_authz over plain HTTP), loaded with other ports by the
  demo's rewriting (demo/gateway.py), pointed at extauthz or at a floor server;
- the peer: the same gateway with Envoy's own ``jwt_authn`` filter in place of ext_authz,
  with the benchmark issuer's keys inline (``local_jwks``), so both verify the same token.

Each gets a virtual host with ext_authz off (Envoy alone: the baseline) and an upstream
that is a second listener of the same Envoy answering 200 itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from demo.gateway import GATEWAY, render_gateway

GATEWAY_HTTP = GATEWAY.parent / "gateway-http.yaml"
NOAUTH_HOST = "noauth.bench.local"
JWT_PROVIDER = "bench"

_TYPES = "type.googleapis.com/envoy.extensions.filters"
_HCM = f"{_TYPES}.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = f"{_TYPES}.http.router.v3.Router"
_JWT_AUTHN = f"{_TYPES}.http.jwt_authn.v3.JwtAuthentication"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_PER_ROUTE_OFF = {
    _EXT_AUTHZ: {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }
}


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    return hcm


def _check_clusters(config: dict[str, Any]) -> list[str]:
    """The clusters the ext_authz filter calls (grpc_service or http_service)."""
    names = []
    for f in _hcm(config)["http_filters"]:
        if f.get("name") != _EXT_AUTHZ:
            continue
        conf = f["typed_config"]
        grpc = conf.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name")
        http = conf.get("http_service", {}).get("server_uri", {}).get("cluster")
        names += [n for n in (grpc, http) if n]
    return names


def gateway(*, source: Path, listen_port: int, admin_port: int, check_port: int, http_port: int,
            upstream_port: int) -> dict[str, Any]:
    """``source`` (gateway.yaml or gateway-http.yaml) on these ports, its ext_authz filter
    calling ``check_port``, plus the benchmark's routes (``add_bench_routes``)."""
    config = render_gateway(listen_port=listen_port, admin_port=admin_port, grpc_port=check_port,
                            check_http_port=check_port, http_port=http_port,
                            upstream_port=upstream_port, source=source)
    if not _check_clusters(config):
        raise KeyError(f"{source.name}: no ext_authz filter with a grpc_service or http_service")
    add_bench_routes(config, upstream_port)
    return config


def jwt_gateway(*, jwks: dict[str, Any], issuer: str, audiences: list[str], listen_port: int,
                admin_port: int, http_port: int, upstream_port: int) -> dict[str, Any]:
    """gateway.yaml with Envoy's ``jwt_authn`` in place of ext_authz: the same listener, HCM
    settings and routes, the issuer's keys inline, a verified-token cache as extauthz has
    (allow-cached is compared with it), and the subject forwarded as a header."""
    config = gateway(source=GATEWAY, listen_port=listen_port, admin_port=admin_port,
                     check_port=http_port, http_port=http_port, upstream_port=upstream_port)
    hcm = _hcm(config)
    for vhost in hcm["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            route.pop("typed_per_filter_config", None)
    provider = {
        "issuer": issuer,
        "audiences": audiences,
        "local_jwks": {"inline_string": json.dumps(jwks)},
        "forward": True,
        "claim_to_headers": [{"header_name": "x-auth-subject", "claim_name": "sub"}],
        "jwt_cache_config": {"jwt_cache_size": 100},
    }
    jwt = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": _JWT_AUTHN,
            "providers": {JWT_PROVIDER: provider},
            "rules": [
                {"match": {"path": "/healthz"}},
                {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}},
            ],
        },
    }
    hcm["http_filters"] = [jwt if f.get("name") == _EXT_AUTHZ else f for f in hcm["http_filters"]]
    return config


def add_bench_routes(config: dict[str, Any], upstream_port: int) -> None:
    """The upstream is a second Envoy listener answering 200 itself (so the figures are
    Envoy's and the authorizer's, not a Python echo server's), and a virtual host with
    ext_authz disabled gives the same route without authorization."""
    listeners = config["static_resources"]["listeners"]
    hcm = _hcm(config)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    hcm["route_config"]["virtual_hosts"].insert(
        0,
        {
            "name": "noauth",
            "domains": [NOAUTH_HOST, f"{NOAUTH_HOST}:*"],
            "routes": [{**copy.deepcopy(routes[-1]), "typed_per_filter_config": _PER_ROUTE_OFF}],
        },
    )
    answer = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    manager = {
        "@type": _HCM,
        "stat_prefix": "bench_upstream",
        "route_config": {"virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": [answer]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    listeners.append({
        "name": "bench_upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
    })
