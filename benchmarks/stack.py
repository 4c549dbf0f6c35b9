"""What the benchmark runs on loopback: Redis, the token issuer, extauthz instances (one
per configuration), the floor server, and Envoy in front of an upstream.

Every process logs into the run's work directory and is stopped when the stack closes.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks import policyset
from benchmarks.checks import CHECK_PATH
from benchmarks.issuer import AUDIENCE, BenchIssuer
from benchmarks.procs import children, free_port
from demo.gateway import envoy_command, render_gateway
from demo.processes import Process
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext

NOAUTH_HOST = "noauth.bench.local"
_TYPES = "type.googleapis.com/envoy.extensions.filters"
_HCM = f"{_TYPES}.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = f"{_TYPES}.http.router.v3.Router"
_PER_ROUTE_OFF = {
    "envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }
}


class BenchError(Exception):
    """A benchmark that cannot run as asked: one line for the operator."""


@dataclass
class Instance:
    """One extauthz configuration under test."""

    name: str
    grpc_port: int
    http_port: int
    process: Process
    workers: int = 1
    admin_port: int = 0  # /metrics (admin.listen)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pids(self) -> list[int]:
        assert self.process.proc is not None
        return children(self.process.proc.pid)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            return str(r.read().decode())


def check_once(address: str, body: bytes, timeout: float = 5.0) -> Any:
    """One Check with grpcio, to confirm what a scenario's body is answered with (h2load
    sees only HTTP 200; the gRPC status and the decision are read here)."""
    with grpc.insecure_channel(address) as channel:
        raw = channel.unary_unary(CHECK_PATH)(body, timeout=timeout)
    return ext.CheckResponse.FromString(raw)


@dataclass
class Stack:
    work: Path
    workers: int
    processes: list[Process] = field(default_factory=list)
    instances: dict[str, Instance] = field(default_factory=dict)
    issuer: BenchIssuer | None = None
    redis_url: str = ""
    floor_address: str = ""
    gateway_port: int = 0  # Envoy -> the "main" extauthz
    floor_gateway_port: int = 0  # Envoy -> the floor server (the same config otherwise)

    # --- parts ------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str], discard_stdout: bool = False) -> Process:
        proc = Process(name, argv, self.work / f"{name}.log", discard_stdout=discard_stdout).start()
        self.processes.append(proc)
        return proc

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError(
                "redis-server is missing: `make bench` installs it (apt-get install redis-server)"
            )
        port = free_port()
        self._start(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work),
            ],
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        _wait(lambda: _redis_ping(port), "redis", 10)

    def start_issuer(self) -> BenchIssuer:
        self.issuer = BenchIssuer(port=free_port()).start()
        return self.issuer

    def apply_policies(self, prefix: str, count: int) -> None:
        """Through the CLI, as an operator would: one atomic batch into Redis."""
        docs = self.work / f"policies-{prefix.rstrip(':')}.yaml"
        docs.write_text(yaml.safe_dump_all(policyset.policies(count), sort_keys=False))
        config = self._config(prefix, {}, 1, 1, 2)  # ports unused by `policy apply`
        proc = self._start(
            f"apply-{prefix.rstrip(':')}",
            [_extauthz(), "policy", "apply", "-f", str(docs), "--config", str(config)],
        )
        assert proc.proc is not None
        if proc.proc.wait(120) != 0:
            raise BenchError(f"policy apply failed:\n{proc.output()[-2000:]}")

    def _config(self, prefix: str, extra: dict[str, Any], grpc_port: int, http_port: int,
                admin_port: int) -> Path:
        assert self.issuer is not None
        doc: dict[str, Any] = {
            "grpc": {"listen": f"127.0.0.1:{grpc_port}"},
            "admin": {"listen": f"127.0.0.1:{admin_port}"},
            "http": {
                "listen": f"127.0.0.1:{http_port}",
                "public_url": f"http://localhost:{self.gateway_port}",
            },
            "issuers": [{"issuer": self.issuer.url, "audiences": [AUDIENCE]}],
            "store": {"url": self.redis_url, "prefix": prefix},
            "default_action": "deny",
            "log_level": "warning",
            **extra,
        }
        path = self.work / f"config-{prefix.rstrip(':')}-{grpc_port}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def start_instance(
        self, name: str, prefix: str, *, workers: int = 1, extra: dict[str, Any] | None = None
    ) -> Instance:
        grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
        config = self._config(prefix, {"workers": workers, **(extra or {})}, grpc_port, http_port,
                              admin_port)
        # The audit trail (stdout) is formatted and written as in production, into /dev/null:
        # a log file would add the disk's writeback to the figures.
        proc = self._start(f"extauthz-{name}", [_extauthz(), "serve", "--config", str(config)],
                           discard_stdout=True)
        instance = Instance(name, grpc_port, http_port, proc, workers, admin_port)
        self.instances[name] = instance
        return instance

    def wait_ready(self) -> None:
        for inst in self.instances.values():
            inst.process.wait_http(f"http://127.0.0.1:{inst.http_port}/readyz", timeout=60)
            expected = 1 if inst.workers == 1 else inst.workers + 1  # the supervisor and its workers
            _wait(lambda inst=inst, n=expected: len(inst.pids) >= n, f"{inst.name} workers", 30)

    def start_floor(self) -> None:
        port = free_port()
        self._start("floor", [_python(), "-m", "benchmarks.floor", "--listen", f"127.0.0.1:{port}"])
        self.floor_address = f"127.0.0.1:{port}"
        _wait(lambda: _grpc_up(self.floor_address), "floor server", 30)

    def start_envoy(self, target: Instance) -> None:
        self.gateway_port = self.gateway_port or free_port()
        self._envoy("envoy", self.gateway_port, target.grpc_port, target.http_port)

    def start_floor_envoy(self, http_port: int) -> None:
        """The same gateway with ext_authz calling the floor server: Envoy plus the gRPC
        transport, without extauthz's logic."""
        self.floor_gateway_port = free_port()
        self._envoy(
            "envoy-floor", self.floor_gateway_port, int(self.floor_address.rsplit(":", 1)[1]), http_port
        )

    def _envoy(self, name: str, listen_port: int, grpc_port: int, http_port: int) -> None:
        upstream_port, admin_port = free_port(), free_port()
        config = render_gateway(
            listen_port=listen_port,
            admin_port=admin_port,
            grpc_port=grpc_port,
            http_port=http_port,
            upstream_port=upstream_port,
        )
        _add_bench_routes(config, upstream_port)
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = self._start(name, envoy_command(path, concurrency=1))
        proc.wait_http(f"http://127.0.0.1:{listen_port}/healthz", timeout=30)

    def close(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        if self.issuer is not None:
            self.issuer.stop()


def _add_bench_routes(config: dict[str, Any], upstream_port: int) -> None:
    """The upstream is a second Envoy listener answering 200 itself (so the figures are
    Envoy's and extauthz's, not a Python echo server's), and a virtual host with ext_authz
    disabled gives the same route without authorization."""
    listeners = config["static_resources"]["listeners"]
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    hcm["route_config"]["virtual_hosts"].insert(
        0,
        {
            "name": "noauth",
            "domains": [NOAUTH_HOST, f"{NOAUTH_HOST}:*"],
            "routes": [{**routes[-1], "typed_per_filter_config": _PER_ROUTE_OFF}],
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


def _extauthz() -> str:
    return str(Path(_python()).parent / "extauthz")


def _python() -> str:
    return sys.executable


def _redis_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _grpc_up(address: str) -> bool:
    try:
        check_once(address, b"", timeout=1)
    except grpc.RpcError:
        return False
    return True


def _wait(ready: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"{what} did not come up within {timeout:.0f}s")
