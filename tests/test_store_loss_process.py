"""The operator's view of a Redis that lost its data (issue 12.1): real `extauthz serve` workers,
the real CLI, a real redis-server flushed under them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse

from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port, wait_for_port
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz, Response, http_get
from tests.test_check_service import CHECK, _request

ADMIN = {"id": "admin", "match": {"paths": [{"prefix": "/admin/"}]},
         "require": {"claims": {"groups": ["sre"]}}}


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extauthz", *args, "--config", str(config)],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


class Conn:
    """A gRPC channel of its own, so it stays on one worker process."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        self.check = self.channel.unary_unary(CHECK)

    def status(self, token: str, path: str = "/") -> tuple[str, int]:
        resp = CheckResponse.parse(self.check(_request({"authorization": f"Bearer {token}"}, path),
                                              timeout=5))
        if resp.status.code == 0:
            ids = {h.header.key: h.header.value for h in resp.ok_response.headers}
            return ids["x-auth-decision-id"].split("-")[0], 200
        return "", int(resp.denied_response.status.code)


def every_worker(port: int, token: str, count: int = 2, within: float = 30.0) -> list[Conn]:
    found: dict[str, Conn] = {}
    deadline = time.monotonic() + within
    while len(found) < count and time.monotonic() < deadline:
        c = Conn(port)
        try:
            worker, status = c.status(token, "/admin/probe")
        except grpc.RpcError:
            c.channel.close()
            time.sleep(0.1)
            continue
        if status != 200 or worker in found:
            c.channel.close()
            time.sleep(0.02)
            continue
        found[worker] = c
    assert len(found) == count, "did not reach every worker"
    return list(found.values())


def admin_get(service: ExtAuthz, path: str) -> Response:
    """/readyz details and /metrics, wherever the service serves them."""
    port = getattr(service, "admin_port", None) or service.http_port
    return http_get(f"http://127.0.0.1:{port}{path}")


def worker_pids(service: ExtAuthz) -> list[int]:
    """The supervisor's children, from /proc."""
    assert service.process is not None
    assert service.process.proc is not None
    parent = service.process.proc.pid
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


def test_a_flushed_redis_lifts_nothing_and_only_an_explicit_reseed_moves_the_workers_on(
    tmp_path: Path,
) -> None:
    idp = LocalIssuer()
    redis = RedisServer(tmp_path / "redis").start()
    store = {"url": redis.url, "prefix": "loss:", "poll_interval": 0.2}
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store,
                                      "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}]}))
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                                  "store": store, "default_action": "authenticated"},
                       args=["--workers", "2"])
    newcomer = ExtAuthz(tmp_path / "newcomer", {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}], "store": store,
        "default_action": "authenticated"})
    (tmp_path / "newcomer").mkdir()
    conns: list[Conn] = []
    try:
        mallory = idp.mint("ES256", sub="mallory", groups=["sre"])
        bob = idp.mint("ES256", sub="bob", groups=["dev"])
        alice = idp.mint("ES256", sub="alice", groups=["sre"])
        assert cli(config, "policy", "apply", "-f", "-", stdin=yaml.safe_dump(ADMIN)).returncode == 0
        revoke = cli(config, "revoke", "subject", "--subject", "mallory")
        assert revoke.returncode == 0, revoke.stderr
        service.start()
        conns = every_worker(service.grpc_port, alice)

        def enforced() -> None:
            for c in conns:
                assert c.status(mallory)[1] == 401  # revoked
                assert c.status(bob, "/admin/users")[1] == 403  # not sre
                assert c.status(bob, "/")[1] == 200

        enforced()
        redis.client().flushall()
        time.sleep(1.0)  # five polls: every worker has seen the empty store
        enforced()  # nothing lifted
        ready = admin_get(service, "/readyz")
        assert ready.status == 200  # it still enforces its last snapshot...
        assert b"REFUSING" in ready.body  # ...and says why it ignores the store
        assert b"[epoch_lost]" in ready.body
        assert b"extauthz store reseed --from-snapshot" in ready.body
        metrics = admin_get(service, "/metrics").body.decode()
        assert re.search(r'extauthz_store_refused\{condition="epoch_lost",data="policies",'
                         r'worker="\d"\} 1\.0', metrics), metrics
        log = service.process.output() if service.process else ""
        assert re.search(r"ERROR extauthz\.follow\[\d+\]: policies: .* \[epoch_lost\]", log)

        # The next ordinary write would make a nearly empty set the truth: refused.
        applied = cli(config, "policy", "apply", "-f", "-",
                      stdin=yaml.safe_dump({"id": "new-one"}))
        assert applied.returncode == 2
        assert "lost its epoch" in applied.stderr
        assert "extauthz store reseed --from-snapshot" in applied.stderr
        revoked = cli(config, "revoke", "subject", "--subject", "eve")
        assert revoked.returncode == 2
        assert "store reseed" in revoked.stderr
        status = cli(config, "store", "status")
        assert status.returncode == 1
        assert "LOST, restore needed" in status.stdout

        # A worker that dies restarts from the floor its siblings keep, not from nothing.
        victim = worker_pids(service)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in worker_pids(service) or len(worker_pids(service)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for c in conns:
            c.channel.close()
        conns = every_worker(service.grpc_port, alice)
        enforced()

        # A new replica with no floor waits for a restore: not ready, checks are 503.
        newcomer.start(wait_ready=False)
        wait_for_port(newcomer.http_port)
        deadline = time.monotonic() + 20
        while b"restore_pending" not in (r := admin_get(newcomer, "/readyz")).body:
            assert time.monotonic() < deadline, r.body
            time.sleep(0.1)
        assert http_get(f"http://127.0.0.1:{newcomer.http_port}/readyz").status == 503
        assert Conn(newcomer.grpc_port).status(bob)[1] == 503

        # The restore: the workers' own snapshot, then everything works again.
        floor = tmp_path / f"state-{service.grpc_port}.snapshot.json"
        reseed = cli(config, "store", "reseed", "--from-snapshot", str(floor))
        assert reseed.returncode == 0, reseed.stderr
        assert "policies: restored 1" in reseed.stdout
        assert "revocations: restored 1" in reseed.stdout
        deadline = time.monotonic() + 10
        while b"REFUSING" in admin_get(service, "/readyz").body:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        enforced()
        newcomer.process.wait_http(f"http://127.0.0.1:{newcomer.http_port}/readyz")  # type: ignore[union-attr]
        assert Conn(newcomer.grpc_port).status(mallory)[1] == 401
        assert cli(config, "store", "status").returncode == 0
        assert cli(config, "policy", "apply", "-f", "-",
                   stdin=yaml.safe_dump({"id": "new-one"})).returncode == 0
    finally:
        for c in conns:
            c.channel.close()
        newcomer.stop()
        service.stop()
        redis.stop()
        idp.close()


def _unsafe_config(idp: LocalIssuer, redis: RedisServer, **store: Any) -> dict[str, Any]:
    return {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
            "store": {"url": redis.url, "prefix": "unsafe:", **store},
            "default_action": "authenticated"}


def test_an_evicting_redis_without_persistence_is_reported_or_refused_at_start(
    tmp_path: Path,
) -> None:
    idp = LocalIssuer()
    redis = RedisServer(tmp_path / "redis", extra=[
        "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru", "--appendonly", "no",
        "--save", ""]).start()
    service = ExtAuthz(tmp_path, _unsafe_config(idp, redis))
    try:
        service.start()
        ready = admin_get(service, "/readyz")
        deadline = time.monotonic() + 10
        while b"UNSAFE REDIS" not in ready.body:
            assert time.monotonic() < deadline, ready.body
            time.sleep(0.1)
            ready = admin_get(service, "/readyz")
        assert b"maxmemory-policy is 'allkeys-lru'" in ready.body
        assert b"persistence is off" in ready.body
        metrics = admin_get(service, "/metrics").body.decode()
        assert re.search(r'extauthz_store_redis_unsafe\{problem="eviction",worker="0"\} 1\.0', metrics)
        assert re.search(r'extauthz_store_redis_unsafe\{problem="no_persistence",worker="0"\} 1\.0',
                         metrics)
        assert service.process is not None
        assert "ERROR extauthz.server" in service.process.output()
        service.stop()

        strict = tmp_path / "strict.yaml"
        cfg = _unsafe_config(idp, redis, require_safe_redis=True, state_file=str(tmp_path / "s.json"))
        strict.write_text(yaml.safe_dump({**cfg, "grpc": {"listen": f"127.0.0.1:{free_port()}"},
                                          "http": {"listen": f"127.0.0.1:{free_port()}"}}))
        refused = subprocess.run([sys.executable, "-m", "extauthz", "serve", "--config", str(strict)],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 2
        assert "store.require_safe_redis" in refused.stderr
        assert "maxmemory-policy is 'allkeys-lru'" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        service.stop()
        redis.stop()
        idp.close()


def test_the_audit_stream_can_live_on_its_own_redis_away_from_the_state(tmp_path: Path) -> None:
    idp = LocalIssuer()
    state = RedisServer(tmp_path / "state").start()
    audit = RedisServer(tmp_path / "audit").start()
    store = {"url": state.url, "prefix": "own:"}
    audit_cfg = {"redis_stream": True, "redis_url": audit.url, "flush_interval": 0.05,
                 "stdout": False}
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                                  "store": store, "audit": audit_cfg,
                                  "default_action": "authenticated"})
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store, "audit": audit_cfg}))
    try:
        service.start()
        conn = Conn(service.grpc_port)
        assert conn.status(idp.mint("ES256", sub="ada"))[1] == 200
        conn.channel.close()
        deadline = time.monotonic() + 10
        while audit.client().xlen("own:audit") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state.client().exists("own:audit") == 0  # nothing competes with the state
        tail = cli(config, "audit", "tail", "--subject", "ada")
        assert tail.returncode == 0, tail.stderr
        assert '"subject":"ada"' in tail.stdout.replace(" ", "")
    finally:
        service.stop()
        state.stop()
        audit.stop()
        idp.close()
