"""Redis losing data never lifts a revocation or removes a policy (issue 12.1).

A real redis-server each time: FLUSHALL, a restart without persistence, a failover to a
lagging replica, `maxmemory` with `allkeys-lru` filled to eviction. The workers here are the
real follow loop in-process (the process-level story is in test_store_loss_process.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.clock import SYSTEM_CLOCK, FakeClock
from extauthz.follow import Followed, adopt_floor, follow_redis
from extauthz.policy.model import parse_policies
from extauthz.policy.store import RedisPolicyStore
from extauthz.policy.sync import PolicySnapshot
from extauthz.policy.sync import followed as followed_policies
from extauthz.redis_hash import (
    EPOCH_LOST,
    EPOCH_REPLACED,
    RECORDS_LOST,
    RESTORE_PENDING,
    REVISION_BACKWARDS,
    StoreLost,
    StoreState,
    judge,
)
from extauthz.redis_safety import EVICTION, NO_PERSISTENCE, UNCHECKED, check_redis
from extauthz.revocation.model import Revocation
from extauthz.revocation.store import RedisRevocationStore
from extauthz.revocation.sync import RevocationSnapshot
from extauthz.revocation.sync import followed as followed_revocations
from extauthz.store_floor import Floor, store_id
from tests.support.redis import RedisServer

NO_PERSISTENCE_ARGS = ["--appendonly", "no", "--save", ""]


def docs(*ids: str) -> list[Any]:
    return parse_policies([{"id": i, "match": {"paths": [{"prefix": f"/{i}/"}]}} for i in ids])


def revoked(sub: str, expires: int | None = None) -> Revocation:
    return Revocation("subject", sub, "", int(time.time()), expires, "test")


class Worker:
    """One worker's follow loop (policies and revocations), with its local floor."""

    def __init__(self, url: str, prefix: str, floor: Path | None, clock: Any = SYSTEM_CLOCK) -> None:
        self.policy_store = RedisPolicyStore(url, prefix, 2.0)
        self.revocation_store = RedisRevocationStore(url, prefix, 2.0, clock)
        self.policies = PolicySnapshot(clock)
        self.revocations = RevocationSnapshot(clock)
        self.floor = Floor(str(floor), store_id(url, prefix)) if floor else None
        self.watched: list[Followed] = [
            followed_policies(self.policy_store, self.policies, self.floor),
            followed_revocations(self.revocation_store, self.revocations, self.floor)]
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Worker:
        sections = self.floor.read() if self.floor else {}
        for f in self.watched:
            if f.kind in sections:
                adopt_floor(f, sections[f.kind])
        self.task = asyncio.create_task(follow_redis(
            self.policy_store.client, self.policy_store.channel, self.watched, 0.1))
        return self

    @property
    def policy_ids(self) -> list[str]:
        return sorted(self.policies.index.by_id) if self.policies.index else []

    @property
    def revoked_subjects(self) -> list[str]:
        current = self.revocations.current
        return sorted(r.value for r in current.records) if current else []

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.policy_store.close()
        await self.revocation_store.close()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def seeded(server: RedisServer, tmp_path: Path) -> tuple[Worker, str]:
    """A store with two policies and a revocation, and a worker that holds them."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    worker = await Worker(server.url, prefix, tmp_path / f"{prefix[:-1]}.snapshot.json").start()
    await worker.policy_store.apply(docs("admin", "billing"))
    await worker.revocation_store.add(revoked("mallory"))
    await until(lambda: worker.policy_ids == ["admin", "billing"]
                and worker.revoked_subjects == ["mallory"])
    return worker, prefix


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    s = RedisServer(tmp_path / "redis").start()
    yield s
    s.stop()


async def test_after_flushall_a_worker_keeps_its_policies_and_revocations_and_names_the_loss(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    try:
        server.client().flushall()
        await until(lambda: worker.policies.refused == EPOCH_LOST
                    and worker.revocations.refused == EPOCH_LOST)
        assert worker.policy_ids == ["admin", "billing"]
        assert worker.revoked_subjects == ["mallory"]
        assert "REFUSING" in (worker.policies.note or "")
        assert "extauthz store reseed --from-snapshot" in (worker.policies.note or "")
        marker = json.loads(server.client().get(prefix + "policies:revision:lost") or "{}")
        assert marker["condition"] == EPOCH_LOST
        assert marker["seen"] == "-:0"
    finally:
        await worker.stop()


async def test_after_flushall_policy_apply_and_revoke_are_refused_with_the_restore_command(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    try:
        server.client().flushall()
        await until(lambda: worker.policies.refused is not None
                    and worker.revocations.refused is not None)
        with pytest.raises(StoreLost, match="store reseed --from-snapshot"):
            await worker.policy_store.apply(docs("almost-empty"))
        with pytest.raises(StoreLost, match="lost its epoch"):
            await worker.revocation_store.add(revoked("eve"))
        with pytest.raises(StoreLost):
            await worker.revocation_store.remove("subject:*:mallory")
        assert server.client().keys(prefix + "policies") == []  # nothing was written
        assert worker.policy_ids == ["admin", "billing"]
    finally:
        await worker.stop()


async def test_a_store_missing_only_its_epoch_refuses_writes_even_with_no_worker_watching(
    server: RedisServer,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisPolicyStore(server.url, prefix, 2.0)
    try:
        await store.apply(docs("a"))
        server.client().delete(prefix + "policies:revision:epoch")  # evicted on its own
        with pytest.raises(StoreLost, match="lost its epoch"):
            await store.apply(docs("b"))
        server.client().flushall()  # a brand-new (or wholly wiped) store is writable
        assert (await store.apply(docs("b"))).endswith(":1")
    finally:
        await store.close()


async def test_a_restart_without_persistence_is_refused_and_the_revocation_stays(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", extra=NO_PERSISTENCE_ARGS).start()
    worker, _ = await seeded(server, tmp_path)
    try:
        server.kill()
        server = RedisServer(tmp_path / "redis", port=server.port, extra=NO_PERSISTENCE_ARGS).start()
        await until(lambda: worker.revocations.refused == EPOCH_LOST, within=15)
        assert worker.revoked_subjects == ["mallory"]
        assert worker.policy_ids == ["admin", "billing"]
    finally:
        await worker.stop()
        server.stop()


async def test_a_failover_to_a_lagging_replica_is_refused(tmp_path: Path) -> None:
    quick = ["--repl-diskless-sync-delay", "0"]  # full syncs start at once
    primary = RedisServer(tmp_path / "primary", extra=quick).start()
    replica = RedisServer(tmp_path / "replica", extra=quick).start()
    worker, _ = await seeded(primary, tmp_path)
    try:
        replica.client().replicaof("127.0.0.1", primary.port)
        await until(lambda: replica.client().info("replication")["master_link_status"] == "up")
        await until(lambda: replica.client().get(worker.policy_store.revision_key) is not None)
        replica.client().replicaof("no", "one")  # the replica falls behind from here...
        await worker.policy_store.apply(docs("audit"))  # ...and misses this
        await until(lambda: "audit" in worker.policy_ids)
        # The failover: the address the workers use now serves the replica's older data.
        primary.client().replicaof("127.0.0.1", replica.port)
        await until(lambda: worker.policies.refused == REVISION_BACKWARDS, within=15)
        assert worker.policy_ids == ["admin", "audit", "billing"]
    finally:
        await worker.stop()
        primary.stop()
        replica.stop()


async def test_eviction_by_a_full_allkeys_lru_redis_is_refused_and_reported(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", extra=[
        "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru", *NO_PERSISTENCE_ARGS]).start()
    worker, prefix = await seeded(server, tmp_path)
    try:
        safety = await check_redis(worker.policy_store.client, "redis")
        assert set(safety.problems) == {EVICTION, NO_PERSISTENCE}
        assert "maxmemory-policy is 'allkeys-lru'" in safety.detail
        client = server.client()
        filler = "x" * 4096
        for i in range(4000):  # 16 MB into a 4 MB Redis, as an audit stream would
            client.set(f"junk:{i}", filler)
            if i % 200 == 0:
                await asyncio.sleep(0)
        left = client.exists(prefix + "policies", prefix + "revocations")
        assert left < 2  # what eviction took is LRU's choice; at least one hash went
        await until(lambda: worker.policies.refused is not None
                    or worker.revocations.refused is not None, within=10)
        assert {worker.policies.refused, worker.revocations.refused} & {EPOCH_LOST, RECORDS_LOST}
        assert worker.policy_ids == ["admin", "billing"]
        assert worker.revoked_subjects == ["mallory"]
    finally:
        await worker.stop()
        server.stop()


async def test_a_redis_that_hides_config_is_reported_as_unchecked(
    server: RedisServer, tmp_path: Path
) -> None:
    managed = RedisServer(tmp_path / "managed", extra=["--rename-command", "CONFIG", ""]).start()
    store = RedisPolicyStore(managed.url, "x:", 2.0)
    safe = RedisPolicyStore(server.url, "x:", 2.0)
    try:
        safety = await check_redis(store.client, store.description)
        assert safety.problems == (UNCHECKED,)
        assert "could not read its configuration" in safety.detail
        assert (await check_redis(safe.client, "redis")).safe  # noeviction, appendonly yes
    finally:
        await store.close()
        await safe.close()
        managed.stop()


async def test_a_reseed_from_the_local_floor_restores_the_store_and_workers_follow_it_again(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    try:
        server.client().flushall()
        await until(lambda: worker.revocations.refused is not None
                    and worker.policies.refused is not None)
        assert worker.floor is not None
        sections = worker.floor.read()
        assert [d["id"] for d in sections["policies"].items] == ["admin", "billing"]
        assert [r["value"] for r in sections["revocations"].items] == ["mallory"]
        epoch = await worker.policy_store.replace_all(
            worker.policies.from_floor_items("", sections["policies"].items).policies)
        await worker.revocation_store.restore(
            [Revocation(**r) for r in sections["revocations"].items])
        assert epoch.startswith("reseed-")
        await until(lambda: worker.policies.refused is None and worker.revocations.refused is None)
        assert worker.policies.revision == f"{epoch}:1"
        assert worker.policy_ids == ["admin", "billing"]
        assert server.client().get(prefix + "policies:revision:lost") is None
        await worker.policy_store.apply(docs("after"))  # ordinary writes work again
        await until(lambda: "after" in worker.policy_ids)
    finally:
        await worker.stop()


async def test_a_restore_that_lacks_a_revocation_does_not_lift_it_the_worker_writes_it_back(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    try:
        server.client().flushall()
        await until(lambda: worker.revocations.refused is not None)
        await worker.revocation_store.restore([revoked("trent")])  # an older snapshot
        await until(lambda: worker.revocations.refused is None
                    and worker.revoked_subjects == ["mallory", "trent"])
        stored = await worker.revocation_store.load()
        await until(lambda: len(server.client().hgetall(prefix + "revocations")) == 2)
        assert sorted(r.value for r in (await worker.revocation_store.load()).records) == [
            "mallory", "trent"]
        assert stored.revision.startswith("reseed-")
        assert await worker.revocation_store.remove(revoked("mallory").key)  # undo works after
        await until(lambda: worker.revoked_subjects == ["trent"])
    finally:
        await worker.stop()


async def test_an_ordinary_write_that_recreated_the_store_after_a_loss_is_not_installed(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    await worker.stop()  # no worker watches: nothing marks the loss
    server.client().flushall()
    store = RedisPolicyStore(server.url, prefix, 2.0)
    await store.apply(docs("only-one"))  # looks like a brand-new store to the CLI
    await store.close()
    again = await Worker(server.url, prefix, tmp_path / f"{prefix[:-1]}.snapshot.json").start()
    try:
        assert again.policies.from_floor  # it starts from its floor...
        await until(lambda: again.policies.refused == EPOCH_REPLACED)
        assert again.policy_ids == ["admin", "billing"]  # ...and keeps it
        assert again.revoked_subjects == ["mallory"]
    finally:
        await again.stop()


async def test_a_new_worker_without_a_floor_waits_for_a_restore_when_the_store_is_marked(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    try:
        server.client().flushall()
        await until(lambda: server.client().exists(prefix + "policies:revision:lost") == 1)
        fresh = await Worker(server.url, prefix, None).start()
        try:
            await until(lambda: fresh.policies.refused == RESTORE_PENDING)
            assert not fresh.policies.ready  # not ready: checks are 503, never "no policies"
            assert "nothing loaded" in (fresh.policies.note or "")
        finally:
            await fresh.stop()
        with_floor = await Worker(server.url, prefix,
                                  tmp_path / f"{prefix[:-1]}.snapshot.json").start()
        try:
            assert with_floor.policy_ids == ["admin", "billing"]  # adopts the floor at once
            assert with_floor.revoked_subjects == ["mallory"]
            await until(lambda: with_floor.policies.refused == EPOCH_LOST)
        finally:
            await with_floor.stop()
    finally:
        await worker.stop()


async def test_revocations_kept_through_a_loss_still_expire_at_their_ttl(
    server: RedisServer, tmp_path: Path
) -> None:
    clock = FakeClock(now_wall=time.time())
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    worker = await Worker(server.url, prefix, None, clock).start()
    try:
        await worker.revocation_store.add(revoked("short", expires=int(clock.wall()) + 60))
        await worker.revocation_store.add(revoked("long"))
        await until(lambda: worker.revoked_subjects == ["long", "short"])
        server.client().flushall()
        await until(lambda: worker.revocations.refused == EPOCH_LOST)
        clock.advance(61)
        await until(lambda: worker.revoked_subjects == ["long"])
    finally:
        await worker.stop()


@pytest.mark.parametrize(("held", "remote", "condition"), [
    (None, StoreState(None, 0, None, 0), None),  # brand new
    (None, StoreState("1.5", 3, 2, 2), None),
    (None, StoreState(None, 3, None, 0), EPOCH_LOST),  # the counter without its epoch
    (None, StoreState(None, 0, None, 0, '{"condition":"epoch_lost"}'), RESTORE_PENDING),
    (StoreState("1.5", 3, 2, 2), StoreState(None, 0, None, 0), EPOCH_LOST),
    (StoreState("1.5", 3, 2, 2), StoreState("1.5", 2, 2, 2), REVISION_BACKWARDS),
    (StoreState("1.5", 3, 2, 2), StoreState("1.5", 4, 3, 1), RECORDS_LOST),
    (StoreState("1.5", 3, 2, 2), StoreState("1.5", 3, None, 0), RECORDS_LOST),
    (StoreState("1.5", 3, 2, 2), StoreState("1.5", 4, 1, 1), None),  # a delete
    (StoreState("1.5", 3, 2, 2), StoreState("9.1", 1, 1, 1), EPOCH_REPLACED),
    (StoreState("1.5", 3, 2, 2), StoreState("reseed-9.000001", 1, 1, 1), None),
    (StoreState("reseed-9.000002", 3, 2, 2), StoreState("reseed-9.000001", 9, 2, 2), EPOCH_REPLACED),
    (StoreState("reseed-9.000002", 3, 2, 2), StoreState("reseed-10.000000", 1, 2, 2), None),
])
def test_which_store_states_a_worker_refuses(held: StoreState | None, remote: StoreState,
                                             condition: str | None) -> None:
    assert judge(held, remote) == condition



def test_the_first_apply_to_an_empty_redis_says_it_started_the_store(
    server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": server.url, "prefix": "first:"}}))

    def apply(doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "extauthz", "policy", "apply", "-f", "-",
                               "--config", str(config)], input=yaml.safe_dump(doc),
                              capture_output=True, text=True, timeout=60, check=False)

    first = apply({"id": "a"})
    assert first.returncode == 0, first.stderr
    assert "the store was empty, so this started it" in first.stderr
    assert "extauthz store status" in first.stderr
    second = apply({"id": "b"})
    assert second.returncode == 0
    assert "the store was empty" not in second.stderr
