"""Policies across processes: `policy apply` in one process, two running workers obey within
a second; Redis killed, the workers keep their snapshot; Redis back, they catch up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.ports import wait_for_port
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz, Response, http_get
from tests.support.workers import Worker, all_answer, one_per_worker


def apply(config: Path, action: str) -> None:
    doc = yaml.safe_dump({"id": "gate", "match": {"paths": [{"prefix": "/"}]},
                          "require": {"authenticated": False}, "action": action})
    result = run_cli(config, "policy", "apply", "-f", "-", stdin=doc)
    assert result.returncode == 0, result.stderr


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
        assert all_answer(workers, 403, 1.0) < 1.0

        redis.kill()
        time.sleep(1.5)  # both workers notice the loss, and keep their snapshot
        assert [w.ask()[1] for w in workers] == [403, 403]
        ready = http_get(f"http://127.0.0.1:{service.admin_port}/readyz")  # details: admin
        assert ready.status == 200
        assert b"stale for" in ready.body  # it says how stale its snapshot is

        redis = RedisServer(tmp_path / "redis", port=redis.port).start()  # same data dir (AOF)
        apply(config, "allow")  # made while the workers are still reconnecting
        all_answer(workers, 200, 15.0)
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

        def unready() -> Response | None:
            r = http_get(url)
            return r if r.status == 503 and b"unreachable" in r.body else None

        r = until(unready, 20, 0.1, what=lambda: http_get(url).body)
        assert b"no policies loaded yet" in r.body
        status = Worker(service.grpc_port).ask()[1]
        assert status == 503
    finally:
        service.stop()
