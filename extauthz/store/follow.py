"""Keeping in-memory snapshots current from a store: the one loop policies and
revocations share.

Redis: one subscription to the events channel per process. Events only say "look": the
worker reads the store's state (revision, epoch, record count, loss marker: one cheap
round trip) at most once per ``DEBOUNCE`` however many events arrive, and reads, parses
and compiles the records (in a thread, off the event loop that answers checks) only when
the revision moved. Every ``poll_interval`` seconds the state is read as a backstop for a
missed event; a lost connection is retried with backoff (0.1 s doubling to 5 s) while the
last snapshots keep serving.

A store that lost data (``redis_hash.judge``: its epoch gone, its revision backwards,
records evicted, a write history that no longer holds the last write the worker installed,
re-created by an ordinary write) is refused: the worker keeps its snapshot, logs an ERROR
(again every minute), marks the store so ordinary writes are refused, and names the
condition in ``/readyz`` and ``extauthz_store_refused``. Only an operator's ``extauthz store
reseed`` (a newer ``reseed-`` epoch) moves it on. The revision a worker compares is the
counter and the id of the last write: an equal counter with another write is a change (and
a loss), never "nothing new".

Files: re-read when their signature changes (sizes, mtimes, inodes, and a ConfigMap volume's
``..data`` target), installed only when the content changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from extauthz.clock import Clock
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.store.floor import Floor, FloorSection
from extauthz.store.redis_hash import CONDITIONS, NOT_MARKED, RESTORE_HINT, StoreState, judge
from extauthz.telemetry import tracing

log = logging.getLogger("extauthz.follow")
DEBOUNCE = 0.05  # seconds: events arriving within this window cost one state read
REFUSAL_LOG_INTERVAL = 60.0  # seconds between ERROR lines while a store stays refused


class TrackedSnapshot:
    """A value built from the store (compiled policies, the revocation set), with how fresh it
    is. Subclasses say how to build it from what the store returns, and how to keep it in
    the local floor."""

    what = "data"

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.value: Any = None
        self._revision: str | None = None
        self.state: StoreState | None = None  # the Redis state the value was read at
        self.loaded_at: float | None = None
        self.last_contact: float | None = None
        self.error: str | None = None
        self.reloads = 0  # snapshots installed
        self.loads = 0  # full reads of the records from the store (each parses and compiles)
        self.errors = 0
        self.refused: str | None = None  # a CONDITIONS code while the store is refused
        self.refused_revision: str | None = None
        self._refusal_logged: float | None = None
        self.from_floor = False

    def build(self, loaded: Any) -> Any:
        raise NotImplementedError

    def describe(self, loaded: Any) -> str:
        return f"revision {loaded.revision}"

    def floor_items(self) -> list[Mapping[str, Any]]:
        """What the local floor keeps of the value."""
        raise NotImplementedError

    def from_floor_items(self, revision: str, items: Sequence[Mapping[str, Any]]) -> Any:
        """A loaded object (as the store's load returns) from a floor section."""
        raise NotImplementedError

    def carry_over(self, loaded: Any, state: StoreState) -> tuple[Any, list[Any]]:
        """What to install when the store moved to ``state``, and what the worker keeps on
        top of it (to write back). Default: exactly what the store holds."""
        return loaded, []

    def written_back(self) -> None:
        """What ``carry_over`` kept is in the store now."""

    def prune(self) -> None:
        """Drop what expired from the value (revocations past their TTL)."""

    def wall(self) -> float:
        return self._clock.wall()

    @property
    def ready(self) -> bool:
        return self.value is not None

    @property
    def revision(self) -> str | None:
        return self._revision

    @property
    def note(self) -> str | None:
        """Why the snapshot may not be what the store says, for /readyz; None when it is."""
        if self.refused is not None:
            kept = f"keeping revision {self.revision}" if self.ready else "nothing loaded"
            return (f"REFUSING the store's revision {self.refused_revision}: "
                    f"{CONDITIONS[self.refused]} [{self.refused}]; {kept}; {RESTORE_HINT}")
        return self.error

    def staleness(self) -> float | None:
        """Seconds since the store was last reached; None before the first contact."""
        if self.last_contact is None:
            return None
        return self._clock.monotonic() - self.last_contact

    def set(self, value: Any, revision: str) -> None:
        self.value, self._revision = value, revision

    def install(self, loaded: Any) -> None:
        self.installed(self.build(loaded), loaded, None)

    def installed(self, value: Any, loaded: Any, state: StoreState | None, *,
                  floor: bool = False) -> None:
        self.set(value, str(loaded.revision))
        self.state = state
        self.loaded_at = self._clock.monotonic()
        self.from_floor = floor
        if not floor:
            self.last_contact = self.loaded_at
            self.error = None
        self.reloads += 1
        source = "the local floor, until the store confirms it" if floor else "the store"
        log.info("%s: %s (from %s)", self.what, self.describe(loaded), source)

    def refuse(self, condition: str, remote: StoreState, description: str) -> None:
        now = self._clock.monotonic()
        again = self._refusal_logged is None or now - self._refusal_logged >= REFUSAL_LOG_INTERVAL
        if condition != self.refused or remote.revision != self.refused_revision or again:
            kept = (f"keeping revision {self.revision} and enforcing it" if self.ready
                    else "nothing loaded: not ready, checks are 503 denials")
            log.error("%s: %s is at revision %s: %s [%s]; %s. Not installed: %s", self.what,
                      description, remote.revision, CONDITIONS[condition], condition, kept,
                      RESTORE_HINT)
            self._refusal_logged = now
        self.refused, self.refused_revision = condition, remote.revision
        self.last_contact = now  # the store answered; what it said is the problem

    def accepted(self) -> None:
        """The store is fit to follow (again)."""
        if self.refused is not None:
            log.warning("%s: the store is fit to follow again (it was %s); following it",
                        self.what, self.refused)
            self.refused = self.refused_revision = self._refusal_logged = None

    def touch(self) -> None:
        self.last_contact = self._clock.monotonic()
        self.error = None

    def failed(self, message: str) -> None:
        self.errors += 1
        if message != self.error:
            kept = f"keeping revision {self.revision}" if self.ready else "nothing loaded yet"
            log.warning("%s: %s (%s)", self.what, message, kept)
        self.error = message


class Snapshot(Protocol):
    @property
    def revision(self) -> str | None: ...

    def install(self, loaded: Any) -> None: ...

    @property
    def error(self) -> str | None: ...

    def failed(self, message: str) -> None: ...

    def touch(self) -> None: ...

    def prune(self) -> None: ...


class RedisSource(Protocol):
    """What following a Redis hash needs (``RedisPolicyStore``, ``RedisRevocationStore``)."""

    description: str

    async def state(self, since: int | None = None) -> StoreState: ...

    async def load_state(self, since: int | None = None) -> tuple[StoreState, Any]: ...

    async def mark_lost(self, condition: str, held: str | None, seen: str, at: float) -> bool: ...


@dataclass(frozen=True)
class Followed:
    kind: str  # the "kind" of the events that concern it
    description: str
    load: Callable[[], Awaitable[Any]]  # returns an object with a .revision
    snapshot: Any  # a TrackedSnapshot (Snapshot for files)
    redis: RedisSource | None = None
    floor: Floor | None = None
    # revocations: add back records a restore left out (epoch, records) -> added, -1 refused
    write_back: Callable[[str, list[Any]], Awaitable[int]] | None = None


async def _reload(f: Followed) -> None:
    try:
        with tracing.span("extauthz.store.load", {"extauthz.data": f.kind}):
            loaded = await f.load()
    except ConfigError as e:  # an invalid document in the store: keep the last good one
        f.snapshot.failed(f"{f.description} holds invalid data: {e.message}")
        return
    if loaded.revision != f.snapshot.revision:
        f.snapshot.install(loaded)
    else:
        f.snapshot.touch()


def adopt_floor(f: Followed, section: FloorSection) -> None:
    """Serve the floor until the store confirms or replaces it (a worker that starts while
    Redis is empty, unreachable or behind enforces what the workers last enforced)."""
    snap: TrackedSnapshot = f.snapshot
    try:
        loaded = snap.from_floor_items(section.state.revision, section.items)
        value = snap.build(loaded)
    except (ConfigError, TypeError, ValueError) as e:
        log.error("%s: the local floor cannot be used (%s); not adopted", snap.what, e)
        return
    snap.installed(value, loaded, section.state, floor=True)


def _held(snap: TrackedSnapshot) -> StoreState | None:
    return snap.state if snap.ready else None


async def _refused(f: Followed, state: StoreState) -> bool:
    snap: TrackedSnapshot = f.snapshot
    assert f.redis is not None
    condition = judge(_held(snap), state)
    if condition is None:
        snap.accepted()
        return False
    snap.refuse(condition, state, f.description)
    if condition not in NOT_MARKED and state.lost is None:
        held = snap.revision if snap.state is None else _identity(snap.state)
        await f.redis.mark_lost(condition, held, _identity(state), snap.wall())
    return True


def _identity(state: StoreState) -> str:
    """The revision and the last recorded write, for the loss marker."""
    return state.revision if state.write is None else f"{state.revision} (write {state.write})"


async def sync_redis(f: Followed) -> None:
    """Compare the store's cheap state with the snapshot; read and install only on a change
    the store may make."""
    snap: TrackedSnapshot = f.snapshot
    assert f.redis is not None
    snap.prune()
    held = _held(snap)
    since = None if held is None else held.written  # the store's history back to it
    state = await f.redis.state(since)
    if await _refused(f, state):
        return
    if state.revision == snap.revision and (held is None or held.write == state.write):
        if snap.from_floor:  # the store confirms the floor: nothing to read or rebuild
            log.info("%s: the store confirms the local floor (revision %s)", snap.what,
                     state.revision)
            snap.from_floor = False
        snap.state = state
        snap.touch()
        return
    try:
        with tracing.span("extauthz.store.load", {"extauthz.data": f.kind}):
            state, loaded = await f.redis.load_state(since)
    except ConfigError as e:  # an invalid document in the store: keep the last good one
        snap.failed(f"{f.description} holds invalid data: {e.message}")
        return
    snap.loads += 1
    if await _refused(f, state):  # the full read decides, not the cheap one
        return
    loaded, kept = snap.carry_over(loaded, state)
    value = await asyncio.to_thread(snap.build, loaded)
    snap.installed(value, loaded, state)
    if kept and f.write_back is not None and state.epoch is not None:
        added = await f.write_back(state.epoch, kept)
        if added >= 0:
            snap.written_back()
        if added > 0:  # another worker may have been first: then there is nothing to say
            log.warning("%s: wrote back %d record(s) still in force that the restore left out",
                        snap.what, added)
    if f.floor is not None:
        await asyncio.to_thread(f.floor.write, f.kind, state, snap.floor_items())


def event_kind(data: object) -> str | None:
    try:
        kind = json.loads(str(data)).get("kind")
    except (ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _still_cancelled() -> None:
    """redis-py's read timeouts can eat a cancel that lands as they expire (the read returns
    None, or a timeout error, and the loop would go on for ever, hanging a shutdown): a
    cancel still pending on this task is raised here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _message(pubsub: Any, timeout: float) -> Any:
    """The next event, or None after ``timeout`` seconds."""
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
    _still_cancelled()
    return msg


async def follow_redis(client: Any, channel: str, followed: Sequence[Followed],
                       poll_interval: float, debounce: float = DEBOUNCE) -> None:
    loop = asyncio.get_running_loop()
    backoff = 0.1
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            for f in followed:
                await sync_redis(f)
            backoff = 0.1
            next_poll = loop.time() + poll_interval
            while True:
                msg = await _message(pubsub, max(0.0, next_poll - loop.time()))
                due: set[str | None] = set()
                if msg is not None:  # an event: gather what else arrives in the window
                    due.add(event_kind(msg.get("data")))
                    until = loop.time() + debounce
                    while (left := until - loop.time()) > 0:
                        more = await _message(pubsub, left)
                        if more is not None:
                            due.add(event_kind(more.get("data")))
                if loop.time() >= next_poll:  # the backstop, whatever events arrive
                    due.update(f.kind for f in followed)
                    next_poll = loop.time() + poll_interval
                for f in followed:
                    if f.kind in due:
                        await sync_redis(f)
        except (StoreUnavailable, RedisError, OSError) as e:
            for f in followed:
                f.snapshot.failed(f"{f.description} unreachable: {e}")
        except Exception as e:
            log.exception("sync: unexpected error; keeping the last snapshots and retrying")
            for f in followed:
                f.snapshot.failed(f"{f.description}: internal error {e.__class__.__name__}")
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        await asyncio.sleep(backoff)
        _still_cancelled()
        backoff = min(backoff * 2, 5.0)


async def follow_file(signature: Callable[[], object], f: Followed, poll_interval: float) -> None:
    seen: object = None
    while True:
        try:
            f.snapshot.prune()
            current = signature()
            if current != seen:
                await _reload(f)
                seen = current  # only now: a read that failed is tried again next time
            elif f.snapshot.error is None:
                f.snapshot.touch()
        except StoreUnavailable as e:
            f.snapshot.failed(f"{f.description}: {e.message}")
        except Exception as e:
            log.exception("sync: unexpected error reading %s; retrying", f.description)
            f.snapshot.failed(f"{f.description}: internal error {e.__class__.__name__}")
        await asyncio.sleep(poll_interval)
