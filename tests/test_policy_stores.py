"""One contract, every store: Redis (a real redis-server), a file, a directory."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from extauthz.clock import SYSTEM_CLOCK
from extauthz.errors import ConfigError, PolicyInvalid, PolicyNotFound, StoreUnavailable
from extauthz.policy.model import parse_policies
from extauthz.policy.store import FilePolicyStore, PolicyStore, RedisPolicyStore, open_store
from extauthz.policy.sync import PolicySnapshot, followed
from extauthz.store.follow import follow_file, follow_redis
from extauthz.store.redis_hash import redacted_url
from tests.support.poll import eventually

Factory = Callable[[], PolicyStore]


@pytest.fixture(params=["redis", "file", "directory"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """A factory: every call opens another client on the same underlying store."""
    opened: list[PolicyStore] = []
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        prefix = f"t{uuid.uuid4().hex[:8]}:"

        def factory() -> PolicyStore:
            opened.append(RedisPolicyStore(server.url, prefix, 2.0))
            return opened[-1]
    else:
        target = tmp_path / ("policies.yaml" if request.param == "file" else "policies/")

        def factory() -> PolicyStore:
            opened.append(FilePolicyStore(str(target) + ("/" if request.param == "directory" else "")))
            return opened[-1]
    yield factory
    for s in opened:
        await s.close()


def docs(*ids: str, **extra: Any) -> list[Any]:
    return parse_policies([{"id": i, "match": {"paths": [{"prefix": f"/{i}/"}]}, **extra} for i in ids])


async def test_an_empty_store_loads_as_no_policies(make_store: Factory) -> None:
    pset = await make_store().load()
    assert pset.policies == ()


async def test_applied_policies_load_back_identically(make_store: Factory) -> None:
    store = make_store()
    batch = docs("a", "b", priority=3)
    await store.apply(batch)
    loaded = {p.id: p for p in (await store.load()).policies}
    assert set(loaded) == {"a", "b"}
    assert loaded["a"].document == batch[0].document


async def test_apply_replaces_by_id_and_changes_the_revision(make_store: Factory) -> None:
    store = make_store()
    r1 = await store.apply(docs("a", "b"))
    r2 = await store.apply(docs("a", action="deny"))
    assert r1 != r2
    loaded = {p.id: p for p in (await store.load()).policies}
    assert loaded["a"].action == "deny"
    assert loaded["b"].action == "allow"


async def test_delete_removes_one_and_unknown_ids_are_an_error(make_store: Factory) -> None:
    store = make_store()
    await store.apply(docs("a", "b"))
    await store.delete("a")
    assert [p.id for p in (await store.load()).policies] == ["b"]
    with pytest.raises(PolicyNotFound, match="no policy with id 'a'"):
        await store.delete("a")


async def test_a_second_client_sees_the_first_ones_changes(make_store: Factory) -> None:
    await make_store().apply(docs("shared"))
    assert [p.id for p in (await make_store().load()).policies] == ["shared"]


async def test_the_revision_is_stable_without_changes(make_store: Factory) -> None:
    store = make_store()
    await store.apply(docs("a"))
    assert (await store.load()).revision == (await store.load()).revision


async def test_a_snapshot_follows_changes_made_by_another_client(make_store: Factory) -> None:
    reader, writer = make_store(), make_store()
    snapshot = PolicySnapshot(SYSTEM_CLOCK)
    if isinstance(reader, FilePolicyStore):
        snapshot.install(await reader.load())
        task = asyncio.create_task(follow_file(reader.signature, followed(reader, snapshot), 0.05))
    else:
        assert isinstance(reader, RedisPolicyStore)
        task = asyncio.create_task(follow_redis(reader.client, reader.channel,
                                                [followed(reader, snapshot)], 0.5))
    try:
        await eventually(lambda: snapshot.ready)
        await writer.apply(docs("fresh"))
        await eventually(lambda: snapshot.index is not None and "fresh" in snapshot.index.by_id)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_broken_file_edit_keeps_the_last_good_set(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("id: good\n")
    store = FilePolicyStore(str(path))
    snapshot = PolicySnapshot(SYSTEM_CLOCK)
    snapshot.install(await store.load())
    task = asyncio.create_task(follow_file(store.signature, followed(store, snapshot), 0.02))
    try:
        path.write_text("id: good\nmatch: {methdos: [GET]}\n")
        await eventually(lambda: snapshot.error)
        assert snapshot.error is not None
        assert "unknown key 'match.methdos'" in snapshot.error
        assert snapshot.index is not None
        assert list(snapshot.index.by_id) == ["good"]
        path.write_text("id: better\n")
        await eventually(lambda: snapshot.index is not None and "better" in snapshot.index.by_id)
        assert snapshot.index is not None
        assert list(snapshot.index.by_id) == ["better"]
        assert snapshot.error is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_invalid_document_in_redis_is_refused_on_load(redis_server: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    redis_server.client().hset(prefix + "policies", "x", json.dumps({"id": "x", "acton": "deny"}))
    store = RedisPolicyStore(redis_server.url, prefix, 2.0)
    with pytest.raises(PolicyInvalid, match="unknown key 'acton'"):
        await store.load()
    await store.close()


async def test_an_unreachable_redis_is_store_unavailable_with_no_password_shown() -> None:
    store = RedisPolicyStore("redis://user:s3cret@127.0.0.1:1/0", "x:", 0.5)
    with pytest.raises(StoreUnavailable) as err:
        await store.load()
    assert "s3cret" not in str(err.value)
    assert "redis redis://user:***@127.0.0.1:1/0" in str(err.value)
    await store.close()


def test_store_urls() -> None:
    assert open_store(None, "p", 1) is None
    assert isinstance(open_store("rediss://h:6380/1", "p", 1), RedisPolicyStore)
    assert isinstance(open_store("file:///tmp/p.yaml", "p", 1), FilePolicyStore)
    with pytest.raises(ConfigError, match=r"'store\.url' is 'mysql://u:\*\*\*@h/db'"):
        open_store("mysql://u:pw@h/db", "p", 1)
    assert redacted_url("redis://:pw@h:1") == "redis://:***@h:1"


async def test_a_flushed_and_reseeded_redis_never_repeats_a_revision(redis_server: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisPolicyStore(redis_server.url, prefix, 2.0)
    await store.apply(docs("old"))
    first = (await store.load()).revision
    client = redis_server.client()
    for key in client.keys(prefix + "*"):
        client.delete(key)  # what FLUSHALL and a restore from an old backup look like to us
    await store.apply(docs("new"))
    second = await store.revision()
    assert first.endswith(":1")
    assert second.endswith(":1")
    assert first != second  # same counter, new epoch: every worker reloads
    await store.close()


DENY_ADMIN = "id: deny-admin\nmatch: {paths: [{prefix: /admin/}]}\naction: deny\n"


async def _loaded_then(store: FilePolicyStore) -> PolicySnapshot:
    snapshot = PolicySnapshot(SYSTEM_CLOCK)
    snapshot.install(await store.load())
    assert snapshot.index is not None
    assert list(snapshot.index.by_id) == ["deny-admin"]
    return snapshot


async def _still_deny_admin(store: FilePolicyStore, snapshot: PolicySnapshot, why: str) -> None:
    """A follower of ``store`` keeps the deny policy and reports ``why``."""
    task = asyncio.create_task(follow_file(store.signature, followed(store, snapshot), 0.02))
    try:
        await eventually(lambda: snapshot.error is not None and why in snapshot.error)
        assert snapshot.index is not None
        assert list(snapshot.index.by_id) == ["deny-admin"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_policy_directory_removed_while_serving_is_unavailable_never_an_empty_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "deny-admin.yaml").write_text(DENY_ADMIN)
    store = FilePolicyStore(str(directory))
    snapshot = await _loaded_then(store)
    shutil.rmtree(directory)
    assert store.is_dir  # still the directory it was, gone or not
    with pytest.raises(StoreUnavailable, match="does not exist any more"):
        await store.load()
    assert f"policy store {directory}: {directory} does not exist any more" in caplog.text
    assert any(r.levelname == "ERROR" for r in caplog.records)
    await _still_deny_admin(store, snapshot, "does not exist any more")


async def test_a_policy_file_removed_while_serving_is_unavailable_never_an_empty_set(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(DENY_ADMIN)
    store = FilePolicyStore(str(path))
    snapshot = await _loaded_then(store)
    path.unlink()
    with pytest.raises(StoreUnavailable, match=r"policies\.yaml does not exist any more"):
        await store.load()
    await _still_deny_admin(store, snapshot, "does not exist any more")


@pytest.mark.parametrize("layout", ["file", "directory"])
async def test_a_policy_file_truncated_to_be_rewritten_is_unavailable_never_an_empty_set(
    tmp_path: Path, layout: str,
) -> None:
    """`> policies.yaml`, `cp` and editors that truncate before writing leave zero bytes
    for a moment: a poll then must not lift the file's deny policies."""
    directory = tmp_path / "policies"
    directory.mkdir()
    path = directory / "deny-admin.yaml"
    path.write_text(DENY_ADMIN)
    store = FilePolicyStore(str(path if layout == "file" else directory))
    snapshot = await _loaded_then(store)
    path.write_text("")
    with pytest.raises(StoreUnavailable, match=r"deny-admin\.yaml is empty \(it had policies\)"):
        await store.load()
    await _still_deny_admin(store, snapshot, "is empty")
    path.write_text("# no policies here any more\n")  # said on purpose: then it is none
    assert (await store.load()).policies == ()


async def test_a_dangling_link_to_a_policy_file_is_unavailable_never_skipped(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "deny-admin.yaml").write_text(DENY_ADMIN)
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "deny-admin.yaml").symlink_to(shared / "deny-admin.yaml")
    store = FilePolicyStore(str(directory))
    snapshot = await _loaded_then(store)
    (shared / "deny-admin.yaml").unlink()
    with pytest.raises(StoreUnavailable, match=r"deny-admin.yaml is a link to .*which does not exist"):
        await store.load()
    await _still_deny_admin(store, snapshot, "which does not exist")
    # A link named as a single policy file is the same.
    (shared / "deny-admin.yaml").write_text(DENY_ADMIN)
    single = FilePolicyStore(str(directory / "deny-admin.yaml"))
    await _loaded_then(single)
    (shared / "deny-admin.yaml").unlink()
    with pytest.raises(StoreUnavailable, match="which does not exist"):
        await single.load()


class _VanishingStore(FilePolicyStore):
    """A store whose directory loses a file between its listing and its read (a race)."""

    def _files(self, within: Path | None = None) -> list[Path]:
        files = super()._files(within)
        for f in files:
            f.unlink(missing_ok=True)
        return files


async def test_a_policy_file_that_vanishes_during_the_read_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "deny-admin.yaml").write_text(DENY_ADMIN)
    with pytest.raises(StoreUnavailable, match=r"deny-admin\.yaml went away while it was read"):
        await _VanishingStore(str(directory)).load()


async def test_an_existing_empty_directory_is_no_policies_and_one_never_seen_too(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    assert (await FilePolicyStore(str(directory)).load()).policies == ()
    # Never there yet (`policy apply` creates it): no policies, until it has been seen.
    assert (await FilePolicyStore(str(tmp_path / "new") + "/").load()).policies == ()
    assert (await FilePolicyStore(str(tmp_path / "new.yaml")).load()).policies == ()
