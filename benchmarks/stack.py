"""What the benchmark runs on loopback: Redis, the token issuer, extauthz instances (one
per configuration, each serving Check over gRPC and over plain HTTP), the two floor
servers, and the Envoy gateways (benchmarks/gateways.py) in front of an upstream.

Every process logs into the run's work directory and is stopped when the stack closes.
"""

from __future__ import annotations

import contextlib
import http.client
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
from benchmarks.gateways import GATEWAY_HTTP, gateway, jwt_gateway
from benchmarks.issuer import AUDIENCE, BenchIssuer
from benchmarks.procs import children, free_port
from demo.gateway import GATEWAY, envoy_command
from demo.processes import Process
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext


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
    check_http_port: int = 0  # Check over plain HTTP (check_http.listen)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def check_http_address(self) -> str:
        return f"127.0.0.1:{self.check_http_port}"

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
    http_floor_address: str = ""
    gateway_port: int = 0  # Envoy -> the "main" extauthz over gRPC (its public_url)
    gateways: dict[str, int] = field(default_factory=dict)  # Envoy process name -> listen port

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
        config = self._config(prefix, {}, 1, 2, 3)  # ports unused by `policy apply`, but distinct
        proc = self._start(
            f"apply-{prefix.rstrip(':')}",
            [_extauthz(), "policy", "apply", "-f", str(docs), "--config", str(config)],
        )
        assert proc.proc is not None
        if proc.proc.wait(120) != 0:
            raise BenchError(f"policy apply failed:\n{proc.output()[-2000:]}")

    def _config(self, prefix: str, extra: dict[str, Any], grpc_port: int, http_port: int,
                admin_port: int, check_http_port: int | None = None) -> Path:
        assert self.issuer is not None
        doc: dict[str, Any] = {
            "grpc": {"listen": f"127.0.0.1:{grpc_port}"},
            "check_http": {"listen": None if check_http_port is None else f"127.0.0.1:{check_http_port}"},
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
        grpc_port, http_port, admin_port, check_port = free_port(), free_port(), free_port(), free_port()
        config = self._config(prefix, {"workers": workers, **(extra or {})}, grpc_port, http_port,
                              admin_port, check_port)
        # The audit trail (stdout) is formatted and written as in production, into /dev/null:
        # a log file would add the disk's writeback to the figures.
        proc = self._start(f"extauthz-{name}", [_extauthz(), "serve", "--config", str(config)],
                           discard_stdout=True)
        instance = Instance(name, grpc_port, http_port, proc, workers, admin_port, check_port)
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

    def start_http_floor(self) -> None:
        port = free_port()
        self._start("http-floor", [_python(), "-m", "benchmarks.http_floor", "--listen", f"127.0.0.1:{port}"])
        self.http_floor_address = f"127.0.0.1:{port}"
        _wait(lambda: _http_up(self.http_floor_address), "HTTP floor server", 30)

    def start_gateways(self, main: Instance, *, http: bool = True) -> None:
        """One Envoy (one worker) per configuration: gRPC and HTTP ext_authz calling extauthz
        and calling each floor, and the jwt_authn peer. ``http``: the HTTP-mode ones too."""
        assert self.issuer is not None
        self.gateway_port = self.gateway_port or free_port()
        self._envoy("envoy", GATEWAY, main.grpc_port, main.http_port, self.gateway_port)
        self._envoy("envoy-grpc-floor", GATEWAY, _port(self.floor_address), main.http_port)
        self._envoy("envoy-jwt", None, 0, main.http_port)
        if http:
            self._envoy("envoy-http", GATEWAY_HTTP, main.check_http_port, main.http_port)
            self._envoy("envoy-http-floor", GATEWAY_HTTP, _port(self.http_floor_address), main.http_port)

    def _envoy(self, name: str, source: Path | None, check_port: int, http_port: int,
               listen_port: int = 0) -> None:
        """``source`` None: the jwt_authn peer."""
        assert self.issuer is not None
        listen_port = listen_port or free_port()
        upstream_port, admin_port = free_port(), free_port()
        ports = {"listen_port": listen_port, "admin_port": admin_port, "http_port": http_port,
                 "upstream_port": upstream_port}
        config = (
            jwt_gateway(jwks=self.issuer.jwks(), issuer=self.issuer.url, audiences=[AUDIENCE], **ports)
            if source is None
            else gateway(source=source, check_port=check_port, **ports)
        )
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = self._start(name, envoy_command(path, concurrency=1))
        proc.wait_http(f"http://127.0.0.1:{listen_port}/healthz", timeout=30)
        self.gateways[name] = listen_port

    def close(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        if self.issuer is not None:
            self.issuer.stop()


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


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def http_get(address: str, path: str, headers: dict[str, str], timeout: float = 5.0) -> int:
    """One plain-HTTP request; its status (a probe before load: wrk counts only >= 400)."""
    conn = http.client.HTTPConnection(address, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _http_up(address: str) -> bool:
    try:
        return http_get(address, "/", {"host": "probe"}, timeout=1) == 200
    except OSError:
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
