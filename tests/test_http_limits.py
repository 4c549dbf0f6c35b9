"""The HTTP side cannot starve Check: header and body timeouts, a connection cap, the raised
open-file limit, and the operator's endpoints (metrics, readiness details, reflection) on an
admin listener apart from what Envoy routes to. Real processes throughout."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from demo.processes import Process
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import fetch_until
from tests.support.ports import free_port
from tests.support.requests import CHECK, bearer, check_request
from tests.support.stack import ExtAuthz, http_get
from tests.support.workers import STICKY


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    yield issuer
    issuer.close()


def _config(idp: LocalIssuer, **extra: Any) -> dict[str, Any]:
    return {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
            "default_action": "authenticated", **extra}


def _closed_after(sock: socket.socket, limit: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (EOF or reset), sending ``trickle`` a byte
    at a time meanwhile; ``limit`` if it stays open that long."""
    start = time.monotonic()
    sock.settimeout(0.25)
    sent = 0
    while time.monotonic() - start < limit:
        if sent < len(trickle):
            with contextlib.suppress(OSError):
                sock.sendall(trickle[sent:sent + 1])
            sent += 1
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return limit


def _connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        sock.sendall(first)
    return sock


def _check(port: int, token: str) -> int:
    """One Check over a new connection: the gRPC status code of the answer (0: allowed)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=STICKY) as ch:
        resp = CheckResponse.parse(ch.unary_unary(CHECK)(check_request(bearer(token)), timeout=5))
    assert resp.status is not None
    return int(resp.status.code)


@pytest.mark.parametrize("side", ["public", "admin"])
def test_a_client_that_sends_half_a_request_is_disconnected_after_the_header_timeout(
    tmp_path: Path, idp: LocalIssuer, side: str
) -> None:
    service = ExtAuthz(tmp_path, _config(idp, http={"header_timeout": 1})).start()
    try:
        port = service.http_port if side == "public" else service.admin_port
        with contextlib.ExitStack() as sockets:
            def connect(first: bytes = b"") -> socket.socket:
                return sockets.enter_context(_connect(port, first))

            silent = connect()  # connects, sends nothing
            head = connect(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")  # headers never end
            trickle = connect()  # a header byte every 0.25 s: activity is not progress
            # A signed-in ceremony whose JSON body never ends: the handler would wait for it.
            body = connect(b"POST /.extauthz/stepup/begin HTTP/1.1\r\nHost: a\r\n"
                           b"Origin: http://localhost:8000\r\nAuthorization: Bearer "
                           + idp.mint("ES256").encode() + b"\r\ncontent-length: 100\r\n"
                           b"content-type: application/json\r\n\r\n{\"a\":")
            idle = connect(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")  # then keeps it open
            assert idle.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            waited = [_closed_after(silent, 6), _closed_after(head, 6),
                      _closed_after(trickle, 6, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 40),
                      _closed_after(body, 6), _closed_after(idle, 6)]
            # Each was closed about a second after it connected (or after its last answer);
            # before, aiohttp's keep-alive default held them for an hour.
            assert time.monotonic() - started < 4, waited
            assert all(w < 3 for w in waited), waited
            prompt = connect(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert prompt.recv(4096).startswith(b"HTTP/1.1 200")  # a prompt client is served
    finally:
        service.stop()


def _serve_with_open_files(tmp_path: Path, idp: LocalIssuer, nofile: str,
                           **extra: Any) -> tuple[Process, dict[str, int]]:
    """`extauthz serve` under `prlimit --nofile=SOFT:HARD`, one worker."""
    ports: dict[str, int] = {}
    while len(set(ports.values())) < 3:  # free_port() can hand out the same port twice
        ports = {"grpc": free_port(), "http": free_port(), "admin": free_port()}
    cfg = _config(idp, grpc={"listen": f"127.0.0.1:{ports['grpc']}"},
                  admin={"listen": f"127.0.0.1:{ports['admin']}"},
                  store={"state_file": str(tmp_path / "state.json")}, shutdown_grace=1, **extra)
    cfg["http"] = {"listen": f"127.0.0.1:{ports['http']}", **cfg.get("http", {})}
    cfg["check_http"] = {"listen": None}
    path = tmp_path / f"nofile-{ports['grpc']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    process = Process("extauthz", ["prlimit", f"--nofile={nofile}", sys.executable, "-m", "extauthz",
                                   "serve", "--config", str(path)],
                      tmp_path / f"nofile-{ports['grpc']}.log").start()
    process.wait_http(f"http://127.0.0.1:{ports['http']}/readyz")
    return process, ports


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit_at_start(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    process, _ = _serve_with_open_files(tmp_path, idp, "256:4096")
    try:
        assert process.proc is not None
        limits = Path(f"/proc/{process.proc.pid}/limits").read_text()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
        assert "open-file limit raised from 256 to 4096" in process.output()
    finally:
        process.stop()


def test_the_check_port_keeps_answering_while_slow_clients_hold_every_http_connection(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    # 256 descriptors in all. Before, 300 slow HTTP clients took every one of them and the
    # worker could accept no Check connection: Envoy's checks failed (closed: 503s).
    process, ports = _serve_with_open_files(tmp_path, idp, "256:256",
                                            http={"header_timeout": 60})
    slow: list[socket.socket] = []
    try:
        token = idp.mint("ES256")
        assert _check(ports["grpc"], token) == 0
        for _ in range(300):
            try:
                slow.append(_connect(ports["http"], b"GET / HTTP/1.1\r\nHost: a\r\n"))
            except OSError:  # the accept queue is full for a moment: the next one may pass
                time.sleep(0.05)
        # Past the cap (half the open files), an HTTP client gets a 503 at once...
        busy = fetch_until(lambda: http_get(f"http://127.0.0.1:{ports['http']}/healthz"),
                           lambda r: r.status == 503, 20, 0.1, what=lambda: process.output()[-2000:])
        assert busy.headers["retry-after"] == "1"
        # ...and the Check port, on the same event loop and descriptors, answers every time.
        for _ in range(20):
            assert _check(ports["grpc"], token) == 0
        # The admin listener has its own small budget.
        assert http_get(f"http://127.0.0.1:{ports['admin']}/readyz").status == 200
        metrics = http_get(f"http://127.0.0.1:{ports['admin']}/metrics").body.decode()
        held = re.search(r'extauthz_http_connections\{listener="http.listen",worker="0"\} (\d+)',
                         metrics)
        assert held is not None
        assert 100 <= int(held.group(1)) <= 128, held.group(0)
        log = process.output()
        assert "http.max_connections 1000 lowered to 128: the open-file limit is 256" in log
        assert "128 connections open, the most it takes (http.max_connections)" in log
    finally:
        for sock in slow:
            sock.close()
        process.stop()


def test_metrics_and_readiness_details_are_on_the_admin_listener_only(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    service = ExtAuthz(tmp_path, _config(idp)).start()
    try:
        public = f"http://127.0.0.1:{service.http_port}"
        assert http_get(public + "/metrics").status == 404
        ready = http_get(public + "/readyz")
        assert (ready.status, ready.body) == (200, b"ready\n")  # a bare status for probes
        detail = service.admin("/readyz")
        assert detail.status == 200
        assert detail.body.startswith(b"ready: policies revision")
        assert b"extauthz_http_connections{" in service.admin("/metrics").body
    finally:
        service.stop()


def test_a_null_admin_listen_turns_the_admin_listener_off(tmp_path: Path, idp: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, _config(idp), args=["--admin-listen", "null"]).start()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", service.admin_port), timeout=2).close()
        assert http_get(f"http://127.0.0.1:{service.http_port}/metrics").status == 404
        assert "admin HTTP on (off)" in service.process.output()  # type: ignore[union-attr]
    finally:
        service.stop()


def test_grpc_reflection_is_served_on_the_admin_grpc_listener_not_the_check_port(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    admin_grpc = free_port()
    service = ExtAuthz(tmp_path, _config(idp, admin={"grpc_listen": f"127.0.0.1:{admin_grpc}"}),
                       args=["--workers", "2"]).start()

    def services(port: int) -> set[str]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=5)))
            return {s.name for s in resp.list_services_response.service}

    try:
        assert "envoy.service.auth.v3.Authorization" in services(admin_grpc)
        with pytest.raises(grpc.RpcError) as refused:
            services(service.grpc_port)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        service.stop()


@pytest.mark.parametrize(("doc", "message"), [
    ({"admin": {"listen": "0.0.0.0:9002"}},
     "'admin.listen' '0.0.0.0:9002' uses the port of another listener"),
    ({"admin": {"grpc_listen": "127.0.0.1:9004"}},
     "'admin.grpc_listen' '127.0.0.1:9004' uses the port of another listener"),
    ({"admin": {"listen": "9004"}}, "'admin.listen' is '9004'; write HOST:PORT"),
    ({"http": {"header_timeout": 0}}, "http.header_timeout"),
    ({"http": {"max_connections": 0}}, "http.max_connections"),
])
def test_admin_and_http_limit_settings_are_checked_at_start(doc: dict[str, Any], message: str) -> None:
    from extauthz.config import settings_from_document
    from extauthz.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        settings_from_document(doc)
    assert message in e.value.message
