"""The failed-ceremony limit holds under parallel attempts: each attempt is reserved (counted)
before it is processed, atomically, in Redis and in the file store."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from extauthz.stepup.ceremonies import CeremonyError, TooManyFailures
from extauthz.stepup.store import FileStepupStore, RedisStepupStore, StepupStore
from tests.support.clock import FakeClock
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.redis import RedisServer
from tests.support.requests import bearer
from tests.support.stack import ORIGIN, ExtAuthz, post_json
from tests.support.webauthn import VECTORS, Rig, ident


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StepupStore:
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return RedisStepupStore(server.url, f"lim{uuid.uuid4().hex[:6]}:", 2.0)
    return FileStepupStore(str(tmp_path / "state.json"), FakeClock())


async def outcome(ceremony: Awaitable[object]) -> str:
    """How the limit treated one ceremony: refused before it ran, processed (it failed), or
    passed."""
    try:
        await ceremony
    except TooManyFailures:
        return "refused"
    except CeremonyError:
        return "processed"
    return "passed"


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_thirty_parallel_failing_ceremonies_process_exactly_max_failures(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = open_store(kind, tmp_path, request)
    rig = Rig(store, FakeClock(), max_failures=5)
    await rig.register()
    bad = json.loads(json.dumps(VECTORS["authentication"]["credential"]))
    bad["response"]["signature"] = "AAAA"

    outcomes = await asyncio.gather(*(outcome(rig.authenticate(credential=json.loads(json.dumps(bad))))
                                      for _ in range(30)))
    assert outcomes.count("processed") == 5
    assert outcomes.count("refused") == 25
    with pytest.raises(TooManyFailures):  # still locked: the good passkey waits too
        await rig.authenticate()
    await store.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_parallel_registrations_are_limited_the_same_way(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = open_store(kind, tmp_path, request)
    rig = Rig(store, FakeClock(), max_failures=3)

    # No challenge was issued: each one fails once processed.
    outcomes = await asyncio.gather(*(outcome(rig.ceremonies.register(
        ident(), VECTORS["registration"]["credential"], "k")) for _ in range(20)))
    assert (outcomes.count("processed"), outcomes.count("refused")) == (3, 17)
    await store.close()


async def test_a_success_clears_the_count_so_only_failures_add_up(tmp_path: Path) -> None:
    from dataclasses import replace

    from extauthz.stepup.store import user_key

    clock = FakeClock()
    rig = Rig(FileStepupStore(str(tmp_path / "s.json"), clock), clock, max_failures=2)
    await rig.register()
    user = user_key("https://idp.example.com", "alice")
    for _ in range(5):  # a failure then a success, again and again: the success counts as
        with pytest.raises(CeremonyError):  # the second attempt, and clears the count
            await rig.authenticate(seed=False)
        await rig.authenticate()
        [used] = await rig.store.passkeys(user)
        await rig.store.save_passkey(user, replace(used, sign_count=0))  # the vector again


def post(url: str, token: str) -> int:
    return post_json(url, {"credential": {"id": "x", "response": {}}},
                     bearer(token, origin=ORIGIN), timeout=20).status


def test_parallel_failing_step_ups_across_two_workers_on_redis_stop_at_the_limit(
    tmp_path: Path, issuer: LocalIssuer, redis: RedisServer
) -> None:
    cfg: dict[str, Any] = {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                           "store": {"url": redis.url, "prefix": "lim:"},
                           "stepup": {"max_failures": 5}, "default_action": "authenticated"}
    service = ExtAuthz(tmp_path, cfg, args=["--workers", "2"]).start()
    try:
        url = f"http://127.0.0.1:{service.http_port}/.extauthz/stepup/finish"
        token = issuer.mint("ES256", sub="pat")
        with ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(lambda _: post(url, token), range(30)))
        assert statuses.count(400) == 5, statuses  # processed: "expired or already used"
        assert statuses.count(429) == 25, statuses
    finally:
        service.stop()
