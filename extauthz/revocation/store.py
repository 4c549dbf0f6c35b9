"""Revocations in the store: Redis (every replica) or the embedded state file.

Redis: ``revocations`` (hash: key -> record JSON) and ``revocations:revision`` (with its
epoch, count, write history and loss marker: see ``extauthz/store/redis_hash.py``); a change is
one Lua script that also drops expired records, bumps the revision, records the write and
publishes ``{"kind": "revocations"}`` on the events channel, the path policies use. A store
that lost data refuses changes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Protocol

from extauthz.clock import Clock
from extauthz.revocation.model import Revocation, RevocationList
from extauthz.stepup.store import FileStepupStore
from extauthz.store.redis_client import is_redis_url
from extauthz.store.redis_hash import BUMP, GUARD, RECORD, RedisHash, StoreState


class RevocationStore(Protocol):
    description: str

    async def load(self) -> RevocationList: ...

    async def add(self, revocation: Revocation) -> str: ...

    async def remove(self, key: str) -> bool: ...

    async def close(self) -> None: ...


_ADD = GUARD + """
local now = tonumber(ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if rec['expires'] ~= cjson.null and rec['expires'] ~= nil and tonumber(rec['expires']) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
""" + BUMP
_REMOVE = GUARD + """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return -1 end
""" + BUMP
# A worker writing back the revocations it holds that a restore left out (ARGV: 1 kind,
# 2 the reseed epoch it saw, then key, record pairs): only into that epoch, never over a
# record, and only a store that is not marked lost again.
_WRITE_BACK = """
if redis.call('GET', KEYS[5]) or redis.call('GET', KEYS[4]) ~= ARGV[2] then return -1 end
local added = 0
for i = 3, #ARGV - 1, 2 do
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
if added == 0 then return 0 end
redis.call('SET', KEYS[6], redis.call('HLEN', KEYS[1]))
local rev = redis.call('INCR', KEYS[2])
""" + RECORD + """
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = ARGV[1], revision = rev}))
return added
"""


class RedisRevocationStore(RedisHash):
    kind = "revocations"

    def __init__(self, url: str, prefix: str, timeout: float, clock: Clock) -> None:
        super().__init__(url, timeout, prefix + "revocations", prefix + "revocations:revision",
                         prefix + "events")
        self._clock = clock
        self._add = self.client.register_script(_ADD)
        self._remove = self.client.register_script(_REMOVE)
        self._write_back = self.client.register_script(_WRITE_BACK)

    async def load(self) -> RevocationList:
        return (await self.load_state())[1]

    async def load_state(self, since: int | None = None) -> tuple[StoreState, RevocationList]:
        state, raw = await self.read_state(since)
        now = self._clock.wall()
        records = [Revocation.from_json(v) for v in raw.values()]
        return state, RevocationList(state.revision, tuple(
            r for r in records if r.expires is None or r.expires > now))

    async def add(self, revocation: Revocation) -> str:
        return str(await self.run(self._add, [self.kind, revocation.key, revocation.to_json(),
                                              int(self._clock.wall())]))

    async def remove(self, key: str) -> bool:
        return bool(await self.run(self._remove, [self.kind, key]) != -1)

    async def restore(self, records: Sequence[Revocation]) -> str:
        """An operator's restore: add every record still in force that the store lacks
        (records there stay), under a new reseed epoch."""
        now = self._clock.wall()
        return await self.reseed([(r.key, r.to_json()) for r in records
                                  if r.expires is None or r.expires > now], replace=False)

    async def write_back(self, epoch: str, records: Sequence[Revocation]) -> int:
        """Add records a worker holds that a restore left out; how many were added (-1: the
        store is no longer at ``epoch``)."""
        args: list[str] = [self.kind, epoch]
        for r in records:
            args += [r.key, r.to_json()]
        return int(await self.run(self._write_back, args))


class FileRevocationStore:
    """Revocations in the embedded state file (shared with the step-up state). The file lock,
    the read and the JSON run in a thread: the event loop serving Check never waits on them."""

    def __init__(self, state: FileStepupStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self.description = state.description

    def signature(self) -> object:
        try:
            st = self._state.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime_ns)

    async def load(self) -> RevocationList:
        return await asyncio.to_thread(self._load)

    def _load(self) -> RevocationList:
        now = self._clock.wall()
        with self._state.locked(write=False) as s:
            raw = dict(s.get("revocations", {}))
        records = sorted((Revocation.from_json(v) for v in raw.values()), key=lambda r: r.key)
        live = tuple(r for r in records if r.expires is None or r.expires > now)
        digest = hashlib.sha256("\n".join(r.to_json() for r in live).encode()).hexdigest()[:16]
        return RevocationList(digest, live)

    async def add(self, revocation: Revocation) -> str:
        return await asyncio.to_thread(self._add, revocation)

    def _add(self, revocation: Revocation) -> str:
        now = self._clock.wall()
        with self._state.locked() as s:
            recs = s.setdefault("revocations", {})
            for key in [k for k, v in recs.items() if (Revocation.from_json(v).expires or now + 1) <= now]:
                del recs[key]
            recs[revocation.key] = revocation.to_json()
        return self._load().revision

    async def remove(self, key: str) -> bool:
        return await asyncio.to_thread(self._remove, key)

    def _remove(self, key: str) -> bool:
        with self._state.locked() as s:
            return s.setdefault("revocations", {}).pop(key, None) is not None

    async def close(self) -> None:
        return None


def open_revocation_store(url: str | None, prefix: str, timeout: float, state: object,
                          clock: Clock) -> RevocationStore:
    """Redis when the store is Redis; else the embedded state file."""
    if url and is_redis_url(url):
        return RedisRevocationStore(url, prefix, timeout, clock)
    assert isinstance(state, FileStepupStore)
    return FileRevocationStore(state, clock)
