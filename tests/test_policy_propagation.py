"""Policies across processes: `policy apply` in one process, two running workers obey within
a second; Redis killed, the workers keep their snapshot; Redis back, they catch up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse

from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import wait_for_port
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz, http_get
from tests.test_check_service import CHECK, _request


def apply(config: Path, action: str) -> None:
    doc = yaml.safe_dump({"id": "gate", "match": {"paths": [{"prefix": "/"}]},
                          "require": {"authenticated": False}, "action": action})
    result = run_cli(config, "policy", "apply", "-f", "-", stdin=doc)
    assert result.returncode == 0, result.stderr


class Worker:
    """A gRPC channel with its own connection, so it stays on one worker process."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        self.check = self.channel.unary_unary(CHECK)

    def ask(self, token: str | None = None) -> tuple[str, int]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        resp = CheckResponse.parse(self.check(_request(headers), timeout=5))
        if resp.status.code == 0:
            ids = {h.header.key: h.header.value for h in resp.ok_response.headers}
            return ids["x-auth-decision-id"].split("-")[0], 200
        return "", int(resp.denied_response.status.code)


def one_per_worker(port: int, count: int = 2, deadline: float = 20.0,
                   token: str | None = None) -> list[Worker]:
    found: dict[str, Worker] = {}
    end = time.monotonic() + deadline
    while len(found) < count and time.monotonic() < end:
        w = Worker(port)
        prefix, status = w.ask(token)
        assert status == 200
        if prefix in found:
            w.channel.close()
        else:
            found[prefix] = w
    assert len(found) == count, "did not reach every worker"
    return list(found.values())


def wait_all(workers: list[Worker], status: int, within: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if all(w.ask()[1] == status for w in workers):
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"not every worker answered {status} within {within}s: "
                         f"{[w.ask()[1] for w in workers]}")


@pytest.fixture
def idp() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    yield issuer
    issuer.close()


def _config(tmp_path: Path, redis_url: str, idp: LocalIssuer) -> dict[str, Any]:
    return {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
            "store": {"url": redis_url, "prefix": "prop:", "poll_interval": 0.5},
            "default_action": "deny"}


def test_changes_reach_every_worker_within_a_second_and_survive_redis_outages(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    service = ExtAuthz(tmp_path, _config(tmp_path, redis.url, idp), args=["--workers", "2"])
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": redis.url, "prefix": "prop:"}}))
    workers: list[Worker] = []
    try:
        apply(config, "allow")
        service.start()
        workers = one_per_worker(service.grpc_port)

        apply(config, "deny")
        assert wait_all(workers, 403, within=1.0) < 1.0

        redis.kill()
        time.sleep(1.5)  # both workers notice the loss, and keep their snapshot
        assert [w.ask()[1] for w in workers] == [403, 403]
        ready = http_get(f"http://127.0.0.1:{service.admin_port}/readyz")  # details: admin
        assert ready.status == 200
        assert b"stale for" in ready.body  # it says how stale its snapshot is

        redis = RedisServer(tmp_path / "redis", port=redis.port).start()  # same data dir (AOF)
        apply(config, "allow")  # made while the workers are still reconnecting
        wait_all(workers, 200, within=15.0)
    finally:
        for w in workers:
            w.channel.close()
        service.stop()
        redis.stop()


def test_without_redis_and_without_a_snapshot_a_worker_is_not_ready_and_denies(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    service = ExtAuthz(tmp_path, _config(tmp_path, "redis://127.0.0.1:1/0", idp)).start(
        wait_ready=False)
    try:
        url = f"http://127.0.0.1:{service.admin_port}/readyz"  # with its details
        wait_for_port(service.http_port)
        deadline = time.monotonic() + 20
        while True:
            r = http_get(url)
            if r.status == 503 and b"unreachable" in r.body:
                break
            assert time.monotonic() < deadline, r.body
            time.sleep(0.1)
        assert b"no policies loaded yet" in r.body
        status = Worker(service.grpc_port).ask()[1]
        assert status == 503
    finally:
        service.stop()
