"""A flood of forged store events costs no reload (issue 12.9).

Anyone who can PUBLISH on the events channel can send ``{"kind": "policies"}`` as fast as
they like. Each used to reload and recompile every policy on the event loop that answers
checks. Now an event only makes the worker read the store's revision (at most once per
debounce window), the records are read only when it moved, and parsing and compiling run
in a thread. Counted, never timed: Redis' own command statistics and our load counter.
The same follow loop always ends when cancelled (a shutdown never hangs on it).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml

from extauthz.clock import SYSTEM_CLOCK
from extauthz.policy.match import PolicyIndex
from extauthz.policy.model import parse_policies
from extauthz.policy.store import PolicySet, RedisPolicyStore
from extauthz.policy.sync import PolicySnapshot, followed
from extauthz.store.follow import follow_redis
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz, http_get

FORGED = '{"kind":"policies"}'


def calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def flood(client: redis.Redis, channel: str, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for _ in range(count):
        pipe.publish(channel, FORGED)
    pipe.execute()


def many(count: int, extra: str = "") -> list[Any]:
    return parse_policies([{"id": f"p{i}{extra}", "match": {"paths": [{"prefix": f"/p{i}/"}]}}
                           for i in range(count)])


class ThreadNoting(PolicySnapshot):
    """Notes which thread compiles the index."""

    builders: list[str]

    def build(self, loaded: PolicySet) -> PolicyIndex:
        self.builders.append(threading.current_thread().name)
        return super().build(loaded)


async def test_forged_events_with_an_unchanged_revision_reload_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisPolicyStore(server.url, prefix, 2.0)
    snapshot = ThreadNoting(SYSTEM_CLOCK)
    snapshot.builders = []
    task = asyncio.create_task(follow_redis(store.client, store.channel,
                                            [followed(store, snapshot)], poll_interval=30.0))
    client = server.client()
    try:
        await store.apply(many(500))
        for _ in range(250):
            if snapshot.index is not None and len(snapshot.index) == 500:
                break
            await asyncio.sleep(0.02)
        assert snapshot.index is not None
        loads, reads = snapshot.loads, calls(client, "hgetall")
        checks = calls(client, "hlen")

        await asyncio.to_thread(flood, client, store.channel, 2000)
        await store.apply(many(1, extra="-real"))  # in order after the flood: a real change
        for _ in range(500):
            if "p0-real" in snapshot.index.by_id:
                break
            await asyncio.sleep(0.02)
        assert "p0-real" in snapshot.index.by_id

        assert snapshot.loads - loads == 1  # the real change only
        assert calls(client, "hgetall") - reads == 1
        assert calls(client, "hlen") - checks < 200  # 2,000 events: debounced revision checks
        assert threading.main_thread().name not in snapshot.builders  # compiled off the loop
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        server.stop()


async def test_the_follow_loop_ends_when_cancelled_even_as_a_read_times_out(tmp_path: Path) -> None:
    """redis-py's read timeout can eat a cancel that lands as it expires; the loop used to
    go on for ever then (about one cancel in ten at a 10 ms poll), hanging a shutdown."""
    server = RedisServer(tmp_path / "redis").start()
    store = RedisPolicyStore(server.url, f"t{uuid.uuid4().hex[:8]}:", 2.0)
    lost = 0
    try:
        await store.apply(many(1))
        for i in range(100):
            task = asyncio.create_task(follow_redis(
                store.client, store.channel, [followed(store, PolicySnapshot(SYSTEM_CLOCK))],
                poll_interval=0.01))
            await asyncio.sleep((i % 25) * 0.002)  # cancels land all over the poll cycle
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if not done:
                lost += 1
                while not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=0.5)
        assert lost == 0
    finally:
        await store.close()
        server.stop()


def test_a_running_worker_ignores_a_flood_of_forged_events(tmp_path: Path) -> None:
    idp = LocalIssuer()
    server = RedisServer(tmp_path / "redis").start()
    store = {"url": server.url, "prefix": "flood:", "poll_interval": 30}
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store}))
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                                  "store": store, "default_action": "authenticated"})
    client = server.client()
    try:
        async def seed() -> None:
            writer = RedisPolicyStore(server.url, "flood:", 2.0)
            await writer.apply(many(300))
            await writer.close()

        asyncio.run(seed())
        service.start()
        before = calls(client, "hgetall")
        flood(client, "flood:events", 3000)
        time.sleep(1.0)
        assert calls(client, "hgetall") == before  # no reload at all
        port = getattr(service, "admin_port", None) or service.http_port  # wherever /metrics is
        metrics = http_get(f"http://127.0.0.1:{port}/metrics").body.decode()
        loaded = re.search(r'extauthz_store_loads_total\{data="policies",worker="0"\} (\S+)', metrics)
        assert loaded is not None
        assert float(loaded.group(1)) == 1.0  # the start, nothing since
    finally:
        service.stop()
        server.stop()
        idp.close()
