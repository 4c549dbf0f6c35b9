"""Redis losing data never lifts a revocation or removes a policy (issue 12.1).

A real redis-server each time: FLUSHALL, a restart without persistence, a failover to a
lagging replica (with and without new writes after it), `maxmemory` with `allkeys-lru` filled
to eviction. The workers here are the real follow loop in-process (the process-level story
is in test_store_loss_process.py).
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

from extauthz.clock import SYSTEM_CLOCK
from extauthz.policy.model import parse_policies
from extauthz.policy.store import RedisPolicyStore
from extauthz.policy.sync import PolicySnapshot
from extauthz.policy.sync import followed as followed_policies
from extauthz.revocation.model import Revocation
from extauthz.revocation.store import RedisRevocationStore
from extauthz.revocation.sync import RevocationSnapshot
from extauthz.revocation.sync import followed as followed_revocations
from extauthz.store.floor import Floor, store_id
from extauthz.store.follow import Followed, adopt_floor, follow_redis
from extauthz.store.redis_hash import (
    CONDITIONS,
    EPOCH_LOST,
    EPOCH_REPLACED,
    HISTORY,
    HISTORY_DIVERGED,
    HISTORY_UNVERIFIABLE,
    RECORDS_LOST,
    RESTORE_PENDING,
    REVISION_BACKWARDS,
    StoreLost,
    StoreState,
    judge,
)
from extauthz.store.redis_safety import EVICTION, NO_PERSISTENCE, UNCHECKED, check_redis
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer

NO_PERSISTENCE_ARGS = ["--appendonly", "no", "--save", ""]


def docs(*ids: str) -> list[Any]:
    return parse_policies([{"id": i, "match": {"paths": [{"prefix": f"/{i}/"}]}} for i in ids])


def revoked(sub: str, expires: int | None = None) -> Revocation:
    return Revocation("subject", sub, "", int(time.time()), expires, "test")


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel the follow loop; it ends (a lost cancel used to hang the test for ever)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5.0)
    while not task.done():  # end it anyway, then say what went wrong
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    assert done, "the follow loop went on after it was cancelled"


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
        self.resume()
        return self

    def resume(self) -> None:
        """(Re)connect and follow: what a worker does when its connection comes back."""
        self.task = asyncio.create_task(follow_redis(
            self.policy_store.client, self.policy_store.channel, self.watched, 0.1))

    async def pause(self) -> None:
        """The connection drops: the worker keeps its snapshots and hears nothing."""
        if self.task is not None:
            await cancelled(self.task)
            self.task = None

    @property
    def policy_ids(self) -> list[str]:
        return sorted(self.policies.index.by_id) if self.policies.index else []

    @property
    def revoked_subjects(self) -> list[str]:
        current = self.revocations.current
        return sorted(r.value for r in current.records) if current else []

    async def stop(self) -> None:
        await self.pause()
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


def lagging(tmp_path: Path) -> tuple[RedisServer, RedisServer]:
    """A primary (the address the workers use) and a replica to fail over to."""
    quick = ["--repl-diskless-sync-delay", "0"]  # full syncs start at once
    return (RedisServer(tmp_path / "primary", extra=quick).start(),
            RedisServer(tmp_path / "replica", extra=quick).start())


def synced(replica: RedisServer, primary: RedisServer) -> bool:
    link = replica.client().info("replication")
    if link.get("master_link_status") != "up" or link.get("master_sync_in_progress"):
        return False
    keys = ("*:revision", "*:revision:log")
    ours, theirs = replica.client(), primary.client()
    return all(ours.get(k) == theirs.get(k) for p in keys for k in theirs.keys(p)
               if theirs.type(k) == "string") and all(
        ours.lrange(k, 0, 0) == theirs.lrange(k, 0, 0) for k in theirs.keys("*:revision:log"))


async def falls_behind(replica: RedisServer, primary: RedisServer) -> None:
    """The replica holds what the primary holds now, then stops following: it misses
    every write from here."""
    replica.client().replicaof("127.0.0.1", primary.port)
    await until(lambda: synced(replica, primary), within=15)
    replica.client().replicaof("no", "one")


async def fail_over(primary: RedisServer, replica: RedisServer) -> None:
    """The failover: the address the workers use now serves the lagging replica's data, as
    a writable primary."""
    primary.client().replicaof("127.0.0.1", replica.port)
    await until(lambda: synced(primary, replica), within=15)
    primary.client().replicaof("no", "one")


@pytest.mark.parametrize("writes", [1, 3], ids=["one-write", "three-writes"])
async def test_a_failover_to_a_replica_that_missed_a_write_then_new_writes_is_refused(
    tmp_path: Path, writes: int
) -> None:
    primary, replica = lagging(tmp_path)
    worker, prefix = await seeded(primary, tmp_path)
    try:
        await falls_behind(replica, primary)
        await worker.revocation_store.add(revoked("bob"))  # the replica misses these
        await worker.policy_store.apply(docs("audit"))
        await until(lambda: worker.revoked_subjects == ["bob", "mallory"]
                    and worker.policy_ids == ["admin", "audit", "billing"])
        held = (worker.revocations.revision, worker.policies.revision)
        await worker.pause()  # the worker's connection drops in the failover
        await fail_over(primary, replica)
        for who in ("eve", "carol", "dave")[:writes]:  # operators write to the new primary
            await worker.revocation_store.add(revoked(who))
            await worker.policy_store.apply(docs(f"by-{who}"))
        now = ((await worker.revocation_store.state()).revision,
               (await worker.policy_store.state()).revision)
        assert (now == held) == (writes == 1)  # one write: the very revision the worker holds
        worker.resume()  # it reconnects
        await until(lambda: worker.revocations.refused == HISTORY_DIVERGED
                    and worker.policies.refused == HISTORY_DIVERGED, within=15)
        assert worker.revoked_subjects == ["bob", "mallory"]  # bob's revocation is not lifted
        assert worker.policy_ids == ["admin", "audit", "billing"]
        marker = json.loads(primary.client().get(prefix + "revocations:revision:lost") or "{}")
        assert marker["condition"] == HISTORY_DIVERGED
        with pytest.raises(StoreLost, match="write history does not hold"):
            await worker.revocation_store.add(revoked("trent"))  # the next write cannot lift it
        await asyncio.sleep(0.3)  # a few polls more
        assert worker.revoked_subjects == ["bob", "mallory"]
    finally:
        await worker.stop()
        primary.stop()
        replica.stop()


async def test_a_worker_that_missed_writes_reads_them_all_and_refuses_nothing(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    try:
        await worker.pause()
        await worker.policy_store.apply(docs("audit"))
        await worker.policy_store.delete("billing")
        await worker.revocation_store.add(revoked("bob"))
        assert await worker.revocation_store.remove(revoked("mallory").key)
        await worker.revocation_store.add(revoked("eve"))
        worker.resume()
        await until(lambda: worker.policy_ids == ["admin", "audit"]
                    and worker.revoked_subjects == ["bob", "eve"])
        await asyncio.sleep(0.3)  # a few polls more
        assert worker.policies.refused is None
        assert worker.revocations.refused is None
        assert server.client().exists(prefix + "policies:revision:lost",
                                      prefix + "revocations:revision:lost") == 0
    finally:
        await worker.stop()


async def test_a_worker_further_behind_than_the_write_history_refuses_without_marking_the_store(
    server: RedisServer, tmp_path: Path
) -> None:
    worker, prefix = await seeded(server, tmp_path)
    fresh: Worker | None = None
    try:
        await worker.pause()
        client = server.client()
        apply = client.register_script(worker.policy_store._apply.script)
        pipe = client.pipeline(transaction=False)
        for i in range(HISTORY + 1):  # more writes than the store keeps the ids of
            doc = json.dumps({"id": f"bulk{i % 10}", "match": {"paths": [{"prefix": "/bulk/"}]}})
            apply(keys=worker.policy_store.keys(), args=["policies", f"bulk{i % 10}", doc],
                  client=pipe)
        pipe.execute()
        worker.resume()
        await until(lambda: worker.policies.refused == HISTORY_UNVERIFIABLE)
        assert worker.policy_ids == ["admin", "billing"]  # kept: it cannot tell
        assert "not marked" in (worker.policies.note or "")
        assert client.exists(prefix + "policies:revision:lost") == 0  # the store may be whole
        await worker.policy_store.apply(docs("after"))  # ordinary writes still work
        fresh = await Worker(server.url, prefix, None).start()  # a restart without the floor
        await until(lambda: "after" in fresh.policy_ids and "bulk9" in fresh.policy_ids)
        assert fresh.policies.refused is None
    finally:
        await worker.stop()
        if fresh is not None:
            await fresh.stop()


async def test_a_store_missing_only_its_write_history_refuses_writes(server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisPolicyStore(server.url, prefix, 2.0)
    try:
        await store.apply(docs("a"))
        server.client().delete(prefix + "policies:revision:log")  # evicted on its own
        with pytest.raises(StoreLost, match="write history does not hold"):
            await store.apply(docs("b"))
        assert judge(None, await store.state()) == HISTORY_DIVERGED  # what `store status` says
    finally:
        await store.close()


def floor_subjects(path: Path) -> list[str]:
    return sorted(r["value"] for r in json.loads(path.read_text())["revocations"]["items"])


async def test_a_worker_that_never_saw_a_lost_write_does_not_overwrite_the_floor_that_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = lagging(tmp_path)
    first, prefix = await seeded(primary, tmp_path)
    floor = tmp_path / f"{prefix[:-1]}.snapshot.json"  # one host: both workers share it
    second = await Worker(primary.url, prefix, floor).start()
    restarted: Worker | None = None
    try:
        await until(lambda: second.revoked_subjects == ["mallory"])
        await falls_behind(replica, primary)
        await second.pause()  # the second worker misses bob's revocation
        await first.revocation_store.add(revoked("bob"))
        await until(lambda: first.revoked_subjects == ["bob", "mallory"]
                    and floor_subjects(floor) == ["bob", "mallory"])
        await first.pause()
        await fail_over(primary, replica)
        await first.revocation_store.add(revoked("eve"))
        second.resume()  # what it holds is in the new primary's history: it follows...
        await until(lambda: second.revoked_subjects == ["eve", "mallory"])
        await until(lambda: "the store lost it" in caplog.text)
        assert floor_subjects(floor) == ["bob", "mallory"]  # ...but does not overwrite the floor
        first.resume()
        await until(lambda: first.revocations.refused == HISTORY_DIVERGED)
        await until(lambda: second.revocations.refused == RESTORE_PENDING)  # first marked it
        restarted = await Worker(primary.url, prefix, floor).start()  # a restart on this host
        assert restarted.revoked_subjects == ["bob", "mallory"]
        await until(lambda: restarted.revocations.refused == HISTORY_DIVERGED)
        assert restarted.revoked_subjects == ["bob", "mallory"]
    finally:
        for w in (first, second, restarted):
            if w is not None:
                await w.stop()
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
        # Which keys went is LRU's choice too (the epoch, the counter, the count, the write
        # history...): any refusal is a correct detection, as long as enforcement was kept.
        refused = {worker.policies.refused, worker.revocations.refused} - {None}
        assert refused  # at least one of the two data sets
        assert refused <= set(CONDITIONS)
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


def st(epoch: str | None, counter: int, count: int | None, records: int, *history: str,
       lost: str | None = None) -> StoreState:
    """A store state; this release records every write, so a counted state has a history."""
    if count is not None and not history:
        history = (f"{counter}:a",)
    return StoreState(epoch, counter, count, records, lost, history)


MARK = '{"condition":"epoch_lost"}'


@pytest.mark.parametrize(("held", "remote", "condition"), [
    (None, st(None, 0, None, 0), None),  # brand new
    (None, st("1.5", 3, 2, 2), None),
    (None, st(None, 3, None, 0), EPOCH_LOST),  # the counter without its epoch
    (None, st(None, 0, None, 0, lost=MARK), RESTORE_PENDING),
    (st("1.5", 3, 2, 2), st(None, 0, None, 0), EPOCH_LOST),
    (st("1.5", 3, 2, 2), st("1.5", 2, 2, 2), REVISION_BACKWARDS),
    (st("1.5", 3, 2, 2), st("1.5", 4, 3, 1, "4:b", "3:a"), RECORDS_LOST),
    (st("1.5", 3, 2, 2), st("1.5", 3, None, 0), RECORDS_LOST),
    (st("1.5", 3, 2, 2), st("1.5", 4, 1, 1, "4:b", "3:a"), None),  # a delete
    (st("1.5", 3, 2, 2), st("9.1", 1, 1, 1), EPOCH_REPLACED),
    (st("1.5", 3, 2, 2), st("reseed-9.000001", 1, 1, 1), None),
    (st("reseed-9.000002", 3, 2, 2), st("reseed-9.000001", 9, 2, 2), EPOCH_REPLACED),
    (st("reseed-9.000002", 3, 2, 2), st("reseed-10.000000", 1, 2, 2), None),
    # The write history: what the counter alone cannot tell.
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 3, 2, 2, "3:a"), None),  # nothing new
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 3, 2, 2, "3:z"), HISTORY_DIVERGED),  # same counter
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 6, 2, 2, "6:d", "5:c", "4:b", "3:a"), None),  # missed 3
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 6, 2, 2, "6:d", "5:c", "4:b", "3:z"), HISTORY_DIVERGED),
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 4, 2, 2, "4:b", "2:x"), HISTORY_DIVERGED),  # 3 skipped
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 4, 2, 2, "2:x"), HISTORY_DIVERGED),  # only older ones
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 5, 2, 2, "5:c", "3:a"), None),  # 4: an older writer
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 4, 2, 2, "3:a"), None),  # 4: an older writer
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 9999, 2, 2, "9999:q", "9998:p"), HISTORY_UNVERIFIABLE),
    (st("1.5", 3, 2, 2, "3:a"), StoreState("1.5", 4, 2, 2), HISTORY_DIVERGED),  # history gone
    (None, StoreState("1.5", 4, 2, 2), HISTORY_DIVERGED),  # counted, but its history gone
    (StoreState("1.5", 3, 2, 2), st("1.5", 4, 2, 2, "4:b"), None),  # held before histories
    (st("1.5", 3, 2, 2, "3:a"), st("reseed-9.000001", 1, 1, 1, "1:r"), None),  # a reseed
    # A store another worker marked lost is not followed, whatever this worker holds.
    (st("1.5", 3, 2, 2, "3:a"), st("1.5", 4, 2, 2, "4:b", "3:a", lost=MARK), RESTORE_PENDING),
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
