"""Revocations in the store: Redis (every replica) or the embedded state file.

Redis: ``revocations`` (hash: key -> record JSON) and ``revocations:revision``; a change
is one Lua script that also drops expired records, bumps the revision and publishes
``{"kind": "revocations"}`` on the events channel, the path policies use.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from extauthz.clock import Clock
from extauthz.redis_hash import RedisHash
from extauthz.revocation.model import Revocation, RevocationList
from extauthz.stepup.store import FileStepupStore


class RevocationStore(Protocol):
    description: str

    async def load(self) -> RevocationList: ...

    async def add(self, revocation: Revocation) -> str: ...

    async def remove(self, key: str) -> bool: ...

    async def close(self) -> None: ...


_ADD = """
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if rec['expires'] ~= cjson.null and rec['expires'] ~= nil and tonumber(rec['expires']) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local rev = redis.call('INCR', KEYS[2])
if rev == 1 then local t = redis.call('TIME'); redis.call('SET', KEYS[4], t[1] .. '.' .. t[2]) end
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = 'revocations', revision = rev}))
return rev
"""
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
local rev = redis.call('INCR', KEYS[2])
if rev == 1 then local t = redis.call('TIME'); redis.call('SET', KEYS[4], t[1] .. '.' .. t[2]) end
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = 'revocations', revision = rev}))
return rev
"""


class RedisRevocationStore(RedisHash):
    def __init__(self, url: str, prefix: str, timeout: float, clock: Clock) -> None:
        super().__init__(url, timeout, prefix + "revocations", prefix + "revocations:revision",
                         prefix + "events")
        self._clock = clock
        self._add = self.client.register_script(_ADD)
        self._remove = self.client.register_script(_REMOVE)

    async def load(self) -> RevocationList:
        rev, raw = await self.read()
        now = self._clock.wall()
        records = [Revocation.from_json(v) for v in raw.values()]
        return RevocationList(rev, tuple(r for r in records if r.expires is None or r.expires > now))

    async def add(self, revocation: Revocation) -> str:
        return str(await self.run(self._add, [revocation.key, revocation.to_json(),
                                              int(self._clock.wall())]))

    async def remove(self, key: str) -> bool:
        return int(await self.run(self._remove, [key])) >= 0


class FileRevocationStore:
    """Revocations in the embedded state file (shared with the step-up state)."""

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
        now = self._clock.wall()
        with self._state.locked(write=False) as s:
            raw = dict(s.get("revocations", {}))
        records = sorted((Revocation.from_json(v) for v in raw.values()), key=lambda r: r.key)
        live = tuple(r for r in records if r.expires is None or r.expires > now)
        digest = hashlib.sha256("\n".join(r.to_json() for r in live).encode()).hexdigest()[:16]
        return RevocationList(digest, live)

    async def add(self, revocation: Revocation) -> str:
        now = self._clock.wall()
        with self._state.locked() as s:
            recs = s.setdefault("revocations", {})
            for key in [k for k, v in recs.items() if (Revocation.from_json(v).expires or now + 1) <= now]:
                del recs[key]
            recs[revocation.key] = revocation.to_json()
        return (await self.load()).revision

    async def remove(self, key: str) -> bool:
        with self._state.locked() as s:
            return s.setdefault("revocations", {}).pop(key, None) is not None

    async def close(self) -> None:
        return None


def open_revocation_store(url: str | None, prefix: str, timeout: float, state: object,
                          clock: Clock) -> RevocationStore:
    """Redis when the store is Redis; else the embedded state file."""
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRevocationStore(url, prefix, timeout, clock)
    assert isinstance(state, FileStepupStore)
    return FileRevocationStore(state, clock)
