"""The embedded (file) stores never make the event loop that answers Check wait: their file
locks, reads and YAML/JSON parsing run in a thread. Another process holding the lock, or a
file that is slow to read, delays only the store call, never the loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import pytest

from extauthz.policy.store import FilePolicyStore
from extauthz.revocation.model import Revocation
from extauthz.revocation.store import FileRevocationStore
from extauthz.stepup.store import FileStepupStore
from tests.support.clock import FakeClock

T = TypeVar("T")
HELD = 1.0  # seconds the lock (or the unreadable file) holds the store call up
POLICY = "id: docs\nmatch: {paths: [{prefix: /docs/}]}\nrequire: {authenticated: false}\n"


@contextlib.contextmanager
def held(lock_path: Path) -> Iterator[IO[str]]:
    """The store's advisory lock, taken as another process would, and let go after HELD
    seconds by a timer (so code that waits for it on the loop still finishes)."""
    lock = open(lock_path, "a")  # noqa: SIM115 - closed below, after the timer let go
    fcntl.flock(lock, fcntl.LOCK_EX)
    timer = threading.Timer(HELD, fcntl.flock, (lock, fcntl.LOCK_UN))
    timer.start()
    try:
        yield lock
    finally:
        timer.join()
        lock.close()


async def runs_beside_the_loop(call: Awaitable[T]) -> T:
    """Start ``call`` while the store is held up; the loop must keep ticking meanwhile."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0.3)
    waiting, ticked = not task.done(), ticks
    result = await asyncio.wait_for(task, HELD + 10)
    ticker.cancel()
    assert waiting, "the store call did not wait for the held lock or file"
    assert ticked >= 10, f"the event loop stalled: {ticked} ticks in 0.3 s"
    return result


@pytest.fixture
def revocations(tmp_path: Path) -> FileRevocationStore:
    clock = FakeClock(now_wall=1_700_000_000)
    return FileRevocationStore(FileStepupStore(str(tmp_path / "state.json"), clock), clock)


async def test_a_held_state_file_lock_never_stalls_the_loop_when_revoking(
    tmp_path: Path, revocations: FileRevocationStore
) -> None:
    lock = tmp_path / "state.json.lock"
    with held(lock):
        await runs_beside_the_loop(revocations.add(Revocation("subject", "alice", "", 1, None)))
    with held(lock):
        listed = await runs_beside_the_loop(revocations.load())
    assert [r.value for r in listed.records] == ["alice"]
    with held(lock):
        assert await runs_beside_the_loop(revocations.remove(listed.records[0].key))


async def test_a_held_state_file_lock_never_stalls_the_loop_in_a_step_up(tmp_path: Path) -> None:
    store = FileStepupStore(str(tmp_path / "state.json"), FakeClock())
    with held(tmp_path / "state.json.lock"):
        assert await runs_beside_the_loop(store.add_failure("user", 60)) == 1


async def test_a_held_policy_file_lock_never_stalls_the_loop_when_applying(tmp_path: Path) -> None:
    source = tmp_path / "source.yaml"
    source.write_text(POLICY)
    policies = (await FilePolicyStore(str(source)).load()).policies
    store = FilePolicyStore(str(tmp_path / "policies.yaml"))
    with held(tmp_path / ".extauthz-policies.lock"):
        await runs_beside_the_loop(store.apply(policies))
    assert [p.id for p in (await store.load()).policies] == ["docs"]
    with held(tmp_path / ".extauthz-policies.lock"):
        await runs_beside_the_loop(store.delete("docs"))
    assert (await store.load()).policies == ()


async def test_a_policy_file_slow_to_read_never_stalls_the_loop(tmp_path: Path) -> None:
    """A FIFO stands in for a slow disk: reading it waits until a writer comes (HELD s)."""
    path = tmp_path / "policies.yaml"
    os.mkfifo(path)

    def writer() -> None:
        with open(path, "w") as f:
            f.write(POLICY)

    timer = threading.Timer(HELD, writer)
    timer.start()
    try:
        loaded = await runs_beside_the_loop(FilePolicyStore(str(path)).load())
    finally:
        timer.join()
    assert [p.id for p in loaded.policies] == ["docs"]
