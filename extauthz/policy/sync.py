"""Every worker's in-memory policy snapshot, and the loops that keep it current.

Redis: subscribe to the events channel, reload on every event, and compare the
revision every ``store.poll_interval`` seconds as a backstop for missed events;
reconnect with backoff. A file: reload when its size or mtime changes. Either way a
failed load keeps the last good snapshot (and says so), and a worker that never
loaded one is not ready: its checks are 503 denials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from redis.exceptions import RedisError

from extauthz.clock import Clock
from extauthz.errors import PolicyInvalid, StoreUnavailable
from extauthz.policy.match import PolicyIndex
from extauthz.policy.store import FilePolicyStore, PolicySet, RedisPolicyStore

log = logging.getLogger("extauthz.policy")


class PolicySnapshot:
    """The compiled index this process enforces, with how fresh it is."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.index: PolicyIndex | None = None
        self.loaded_at: float | None = None
        self.last_contact: float | None = None
        self.error: str | None = None
        self.reloads = 0

    @property
    def ready(self) -> bool:
        return self.index is not None

    @property
    def revision(self) -> str | None:
        return self.index.revision if self.index is not None else None

    def staleness(self) -> float | None:
        """Seconds since the store was last reached; None before the first contact."""
        if self.last_contact is None:
            return None
        return self._clock.monotonic() - self.last_contact

    def install(self, pset: PolicySet) -> None:
        self.index = PolicyIndex(pset.policies, pset.revision)
        now = self._clock.monotonic()
        self.loaded_at = self.last_contact = now
        self.error = None
        self.reloads += 1
        log.info("policies: revision %s, %d policies", pset.revision, len(pset.policies))

    def touch(self) -> None:
        self.last_contact = self._clock.monotonic()
        self.error = None

    def failed(self, message: str) -> None:
        if message != self.error:
            kept = f"keeping revision {self.revision}" if self.ready else "no policies loaded yet"
            log.warning("policies: %s (%s)", message, kept)
        self.error = message


async def _load_into(store: RedisPolicyStore | FilePolicyStore, snapshot: PolicySnapshot) -> None:
    try:
        pset = await store.load()
    except PolicyInvalid as e:
        snapshot.failed(f"store holds an invalid policy: {e.message}")
        return
    snapshot.install(pset)


async def follow_redis(store: RedisPolicyStore, snapshot: PolicySnapshot, poll_interval: float) -> None:
    backoff = 0.1
    while True:
        pubsub = store.client.pubsub()
        try:
            await pubsub.subscribe(store.channel)
            await _load_into(store, snapshot)
            backoff = 0.1
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_interval)
                if msg is not None:
                    if _is_policy_event(msg.get("data")):
                        await _load_into(store, snapshot)
                    else:
                        snapshot.touch()
                    continue
                revision = await store.revision()
                if revision != snapshot.revision:
                    await _load_into(store, snapshot)
                else:
                    snapshot.touch()
        except (StoreUnavailable, RedisError, OSError) as e:
            snapshot.failed(f"{store.description} unreachable: {e}")
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)


def _is_policy_event(data: object) -> bool:
    try:
        return bool(json.loads(str(data)).get("kind") == "policies")
    except (ValueError, AttributeError):
        return False


async def follow_file(store: FilePolicyStore, snapshot: PolicySnapshot, poll_interval: float) -> None:
    """Re-read when size or mtime change; install only when the content (revision) did."""
    seen = None
    while True:
        signature = store.signature()
        if signature != seen:
            seen = signature
            try:
                pset = await store.load()
            except (PolicyInvalid, StoreUnavailable) as e:
                snapshot.failed(f"{store.description}: {e.message}")
            else:
                if pset.revision != snapshot.revision:
                    snapshot.install(pset)
                else:
                    snapshot.touch()
        elif snapshot.error is None:
            snapshot.touch()
        await asyncio.sleep(poll_interval)
