"""The real stack for end-to-end tests: extauthz (a subprocess), an echo upstream, Envoy.

Envoy asks extauthz over gRPC (envoy/gateway.yaml) or over plain HTTP
(envoy/gateway-http.yaml): ``Gateway(..., transport="http")``."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demo.echo import echo_command
from demo.gateway import GATEWAYS, envoy_command, write_gateway
from demo.processes import Process
from tests.support.ports import free_port

ORIGIN = "http://localhost:8000"  # the default http.public_url's origin: the pages' own site


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer for the test to look at, not to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_request(url: str, *, method: str = "GET", body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10,
                 follow_redirects: bool = False) -> Response:
    """One HTTP request; any status is an answer (never an exception), a redirect too unless
    ``follow_redirects``."""
    req = urllib.request.Request(url, data=body, method=method,  # noqa: S310 (loopback)
                                 headers=headers or {})
    opener = urllib.request.build_opener(*(() if follow_redirects else (_NoRedirect,)))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                            resp.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def http_get(url: str, headers: dict[str, str] | None = None) -> Response:
    return http_request(url, headers=headers)


def post_json(url: str, payload: object, headers: dict[str, str] | None = None, *,
              timeout: float = 10) -> Response:
    """POST ``payload`` as application/json (bytes are sent as they are)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http_request(url, method="POST", body=body, timeout=timeout,
                        headers={"content-type": "application/json", **(headers or {})})


@dataclass
class ExtAuthz:
    """``extauthz serve`` in a subprocess with a config written for the test."""

    workdir: Path
    config: dict[str, Any]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)  # /metrics and /readyz details
    check_http_port: int = field(default_factory=free_port)  # Check over plain HTTP
    process: Process | None = None

    def start(self, wait_ready: bool = True) -> ExtAuthz:
        store = {"state_file": str(self.workdir / f"state-{self.grpc_port}.json"),
                 **self.config.get("store", {})}
        cfg = {"http": {"listen": f"127.0.0.1:{self.http_port}",
                        "public_url": ORIGIN}, **self.config,
               "grpc": {"listen": f"127.0.0.1:{self.grpc_port}"}, "store": store,
               "shutdown_grace": self.config.get("shutdown_grace", 2),
               # the log file is not a terminal (JSON by default): tests read the text lines
               "log_format": self.config.get("log_format", "text")}
        cfg["http"] = {**cfg["http"], "listen": f"127.0.0.1:{self.http_port}"}
        while self.admin_port in (self.grpc_port, self.http_port):  # free_port() may repeat
            self.admin_port = free_port()
        cfg["admin"] = {"listen": f"127.0.0.1:{self.admin_port}", **self.config.get("admin", {})}
        while self.check_http_port in (self.grpc_port, self.http_port, self.admin_port):
            self.check_http_port = free_port()
        cfg["check_http"] = {"listen": f"127.0.0.1:{self.check_http_port}",
                             **self.config.get("check_http", {})}
        path = self.workdir / f"extauthz-{self.grpc_port}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.process = Process("extauthz", [sys.executable, "-m", "extauthz", "serve",
                                            "--config", str(path), *self.args],
                               self.workdir / f"extauthz-{self.grpc_port}.log",
                               env=self.env).start()
        if wait_ready:
            self.process.wait_http(f"http://127.0.0.1:{self.http_port}/readyz")
        return self

    def admin(self, path: str) -> Response:
        """GET on the admin listener: /metrics, /readyz with its details."""
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


@dataclass
class Gateway:
    """Envoy loading envoy/gateway.yaml (``transport="grpc"``) or envoy/gateway-http.yaml
    (``"http"``), pointed at extauthz and an echo upstream; ``echo=False``: the test serves
    ``upstream_port`` itself (e.g. tests/support/raw_http.py's recording upstream)."""

    workdir: Path
    extauthz: ExtAuthz
    transport: str = "grpc"
    echo: bool = True
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    upstream_port: int = field(default_factory=free_port)
    procs: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        echo = Process("echo", echo_command(f"127.0.0.1:{self.upstream_port}"),
                       self.workdir / f"echo-{self.upstream_port}.log")
        if self.echo:
            self.procs.append(echo.start())
        cfg = write_gateway(self.workdir / f"gateway-{self.port}.yaml", listen_port=self.port,
                            admin_port=self.admin_port, grpc_port=self.extauthz.grpc_port,
                            http_port=self.extauthz.http_port, upstream_port=self.upstream_port,
                            check_http_port=self.extauthz.check_http_port,
                            source=GATEWAYS[self.transport])
        envoy = Process("envoy", envoy_command(cfg), self.workdir / f"envoy-{self.port}.log")
        self.procs.append(envoy.start())
        if self.echo:
            echo.wait_http(f"http://127.0.0.1:{self.upstream_port}/")
        envoy.wait_http(f"{self.url}/healthz")
        return self

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return http_get(self.url + path, headers)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
