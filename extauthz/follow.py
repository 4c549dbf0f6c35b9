"""Keeping in-memory snapshots current from a store: the one loop policies and
revocations share.

Redis: one subscription to the events channel per process; an event reloads the
snapshots of its ``kind``; every ``poll_interval`` seconds each snapshot compares its
revision with the store's as a backstop for a missed event; a lost connection is
retried with backoff (0.1 s doubling to 5 s) while the last snapshots keep serving.
Files: re-read when the size or mtime changes, installed only when the content changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from extauthz.clock import Clock
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.telemetry import tracing

log = logging.getLogger("extauthz.follow")


class TrackedSnapshot:
    """A value built from the store (compiled policies, the revocation set), with how fresh it
    is. Subclasses say how to build it from what the store returns."""

    what = "data"

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.value: Any = None
        self._revision: str | None = None
        self.loaded_at: float | None = None
        self.last_contact: float | None = None
        self.error: str | None = None
        self.reloads = 0
        self.errors = 0

    def build(self, loaded: Any) -> Any:
        raise NotImplementedError

    def describe(self, loaded: Any) -> str:
        return f"revision {loaded.revision}"

    @property
    def ready(self) -> bool:
        return self.value is not None

    @property
    def revision(self) -> str | None:
        return self._revision

    def staleness(self) -> float | None:
        """Seconds since the store was last reached; None before the first contact."""
        if self.last_contact is None:
            return None
        return self._clock.monotonic() - self.last_contact

    def set(self, value: Any, revision: str) -> None:
        self.value, self._revision = value, revision

    def install(self, loaded: Any) -> None:
        self.set(self.build(loaded), str(loaded.revision))
        self.loaded_at = self.last_contact = self._clock.monotonic()
        self.error = None
        self.reloads += 1
        log.info("%s: %s", self.what, self.describe(loaded))

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


@dataclass(frozen=True)
class Followed:
    kind: str  # the "kind" of the events that concern it
    description: str
    load: Callable[[], Awaitable[Any]]  # returns an object with a .revision
    remote_revision: Callable[[], Awaitable[str]]
    snapshot: Snapshot


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


def event_kind(data: object) -> str | None:
    try:
        kind = json.loads(str(data)).get("kind")
    except (ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


async def follow_redis(client: Any, channel: str, followed: Sequence[Followed],
                       poll_interval: float) -> None:
    backoff = 0.1
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            for f in followed:
                await _reload(f)
            backoff = 0.1
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_interval)
                if msg is not None:
                    kind = event_kind(msg.get("data"))
                    for f in followed:
                        if f.kind == kind:
                            await _reload(f)
                    continue
                for f in followed:
                    if await f.remote_revision() != f.snapshot.revision:
                        await _reload(f)
                    else:
                        f.snapshot.touch()
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
        backoff = min(backoff * 2, 5.0)


async def follow_file(signature: Callable[[], object], f: Followed, poll_interval: float) -> None:
    seen: object = None
    while True:
        try:
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
