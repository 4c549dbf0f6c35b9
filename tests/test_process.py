"""The service as an operator runs it: CLI errors, graceful shutdown, several workers."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import jwt as pyjwt
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse

from tests.support.cli import refused, run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.ports import free_port
from tests.support.requests import CHECK, check_request
from tests.support.stack import ExtAuthz
from tests.support.workers import answered_by


def _config(idp: LocalIssuer, **extra: Any) -> dict[str, Any]:
    return {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
            "default_action": "authenticated", **extra}


def test_a_bad_config_is_one_line_naming_the_key_not_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("grpc: {listen: '0.0.0.0:9001'}\ndefault_acton: allow\n")
    assert refused(run_cli(cfg, "serve")) == (
        "extauthz: config: unknown key 'default_acton': did you mean 'default_action'?")


def test_a_missing_policy_file_stops_the_start(tmp_path: Path) -> None:
    result = run_cli(None, "serve", "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen",
                  f"127.0.0.1:{free_port()}",
                  env={"EXTAUTHZ_STORE_URL": f"file://{tmp_path}/nope.yaml", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert f"names {tmp_path}/nope.yaml, which does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_policy_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("id: a\nacton: deny\n")
    result = run_cli(None, "serve", "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen",
                  f"127.0.0.1:{free_port()}",
                  env={"EXTAUTHZ_STORE_URL": f"file://{tmp_path}/p.yaml", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "unknown key 'acton': did you mean 'action'?" in result.stderr


def test_a_bad_cli_argument_is_a_usage_error() -> None:
    result = run_cli(None, "serve", "--workers", "lots")
    assert result.returncode == 2
    assert "argument --workers: invalid int value: 'lots'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli(None, "serve", "--http-listen", f"127.0.0.1:{port}", "--grpc-listen",
                      f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_token_command_mints_for_the_demo_issuer_only(tmp_path: Path) -> None:
    key = tmp_path / "demo.pem"
    env = {"EXTAUTHZ_DEMO_ISSUER_KEY_FILE": str(key), "PATH": "/usr/bin:/bin"}
    result = run_cli(None, "token", "--sub", "alice", "--email", "a@example.com", "--groups", "sre,dev",
                  env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    from extauthz.config import load_settings
    from extauthz.identity.demo_issuer import demo_issuer

    issuer = demo_issuer(load_settings(None, env).demo_issuer)
    claims = pyjwt.decode(token, issuer.private_key.public_key(), algorithms=["ES256"],
                          audience="extauthz-demo")
    assert (claims["sub"], claims["email"], claims["groups"]) == ("alice", "a@example.com",
                                                                   ["sre", "dev"])
    assert claims["iss"] == "http://localhost:9002"
    assert key.stat().st_mode & 0o077 == 0  # the key file is private


def test_sigterm_lets_an_in_flight_check_finish_then_exits(tmp_path: Path, issuer: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, _config(issuer, jwks={"unknown_kid_cooldown": 0},
                                         shutdown_grace=5)).start()
    try:
        issuer.rotate()  # the next token's kid is unknown: the check waits for a refetch...
        issuer.delay = 1.0  # ...from a slow IdP
        token = issuer.mint("ES256")
        result: dict[str, Any] = {}

        def call() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as ch:
                result["raw"] = ch.unary_unary(CHECK)(
                    check_request({"authorization": f"Bearer {token}"}), timeout=10)

        caller = threading.Thread(target=call)
        caller.start()
        threading.Event().wait(0.4)
        assert service.process is not None
        assert service.process.proc is not None
        service.process.proc.send_signal(signal.SIGTERM)
        caller.join(10)
        assert CheckResponse.parse(result["raw"]).status.code == 0
        assert service.process.proc.wait(10) == 0
    finally:
        service.stop()


def test_several_workers_share_the_port_and_all_answer(tmp_path: Path, issuer: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, _config(issuer), args=["--workers", "2"]).start()
    try:
        token = issuer.mint("RS256")
        # Each new connection may land on either worker (the second may still be starting);
        # the decision-id prefix is per process.
        both_answered(service.grpc_port, token, 20, 0)
        assert service.stop() == 0
    finally:
        service.stop()


def _workers(supervisor: int) -> dict[str, int]:
    """The supervisor's live worker processes, by slot (their EXTAUTHZ_WORKER_ID)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) != supervisor or state == "Z":
                continue
            env = dict(item.split("=", 1) for item in
                       (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if "EXTAUTHZ_WORKER_ID" in env:
            found[env["EXTAUTHZ_WORKER_ID"]] = int(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def both_answered(port: int, token: str, timeout: float, interval: float) -> None:
    """Checks on new connections until both workers have answered one."""
    prefixes: set[str] = set()

    def one_more() -> bool:
        prefixes.add(answered_by(port, token))
        return len(prefixes) == 2

    until(one_more, timeout, interval, what=lambda: f"only {prefixes} answered")


def _answers_again(port: int, token: str) -> str:
    """``answered_by``, once more after a reset: with SO_REUSEPORT the kernel may hand a new
    connection to a worker's listening socket in the instant that worker is starting or
    dying, and that one connection is reset (Envoy opens another)."""
    try:
        return answered_by(port, token)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return answered_by(port, token)


def test_a_crash_looping_worker_is_restarted_with_backoff_while_the_other_keeps_serving(
    tmp_path: Path, issuer: LocalIssuer
) -> None:
    import os

    service = ExtAuthz(tmp_path, _config(issuer), args=["--workers", "2"]).start()
    try:
        assert service.process is not None
        assert service.process.proc is not None
        supervisor = service.process.proc
        token = issuer.mint("RS256")
        until(lambda: len(_workers(supervisor.pid)) >= 2, 20)
        healthy = _workers(supervisor.pid)["0"]
        # Kill slot 1 as soon as each new process of it appears: it never gets to start.
        # (Before, the second death within 5 s of a start stopped the supervisor and slot 0.)
        gaps = []
        victim = _workers(supervisor.pid)["1"]
        seen = {victim}
        for _ in range(4):
            os.kill(victim, signal.SIGKILL)
            died = time.monotonic()
            while _alive(victim):  # its sockets close as it dies (a connection in its queue
                time.sleep(0.01)  # meanwhile is reset: Envoy retries that one)
            while True:
                assert supervisor.poll() is None, service.process.output()[-2000:]
                assert _answers_again(service.grpc_port, token)  # new connections are answered
                current = _workers(supervisor.pid).get("1")
                if current is not None and current not in seen:
                    break
                assert time.monotonic() - died < 30, "slot 1 was not restarted"
                time.sleep(0.05)
            gaps.append(time.monotonic() - died)
            victim = current
            seen.add(victim)
        assert _workers(supervisor.pid)["0"] == healthy  # never stopped
        assert gaps[-1] > 3.0 > 1.5 > gaps[0], gaps  # 0.5 s, 1 s, 2 s, 4 s: it backs off
        assert "restarting in 4.0s (4 short runs in a row)" in service.process.output()
        # Left alone, slot 1 comes back and both answer again.
        both_answered(service.grpc_port, token, 30, 0.02)
        assert service.stop() == 0
    finally:
        service.stop()


def test_a_worker_that_fails_its_first_start_stops_the_supervisor(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # the gRPC port is taken by someone else: every start would fail
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli(None, "serve", "--workers", "2", "--grpc-listen", f"127.0.0.1:{port}",
                      "--http-listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "while starting; stopping" in result.stderr


def _http_check(port: int, token: str, timeout: float = 10) -> tuple[int, str]:
    """One Check over plain HTTP on a new connection: (status, the decision-id prefix)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"host": "api.example.com",
                                          "authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, (resp.getheader("x-auth-decision-id") or "").split("-")[0]
    finally:
        conn.close()


def test_several_workers_share_the_plain_http_check_port(tmp_path: Path, issuer: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, _config(issuer), args=["--workers", "2"]).start()
    try:
        token = issuer.mint("RS256")
        seen: set[str] = set()

        def both() -> bool:
            status, worker = _http_check(service.check_http_port, token)
            assert status == 200
            seen.add(worker)
            return len(seen) == 2

        until(both, timeout=20, interval=0)
        assert service.stop() == 0
    finally:
        service.stop()


def test_sigterm_lets_an_in_flight_http_check_finish_then_exits(
        tmp_path: Path, issuer: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, _config(issuer, jwks={"unknown_kid_cooldown": 0},
                                         shutdown_grace=5)).start()
    try:
        issuer.rotate()  # the next token's kid is unknown: the check waits for a refetch...
        issuer.delay = 1.0  # ...from a slow IdP
        token = issuer.mint("ES256")
        result: dict[str, Any] = {}
        caller = threading.Thread(
            target=lambda: result.update(answer=_http_check(service.check_http_port, token)))
        caller.start()
        threading.Event().wait(0.4)
        assert service.process is not None
        assert service.process.proc is not None
        service.process.proc.send_signal(signal.SIGTERM)
        caller.join(10)
        assert result["answer"][0] == 200
        assert service.process.proc.wait(10) == 0
    finally:
        service.stop()
