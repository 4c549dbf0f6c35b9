"""Revocations in the store: Redis (every replica) or the embedded state file.

Redis: ``revocations`` (hash: key -> record JSON) and ``revocations:revision``; a change
is one Lua script that also drops expired records, bumps the revision and publishes
``{"kind": "revocations"}`` on the events channel, the path policies use.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extauthz.clock import Clock
from extauthz.errors import StoreUnavailable
from extauthz.policy.store import redacted_url
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
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = 'revocations', revision = rev}))
return rev
"""
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
local rev = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], cjson.encode({kind = 'revocations', revision = rev}))
return rev
"""


class RedisRevocationStore:
    def __init__(self, url: str, prefix: str, timeout: float, clock: Clock) -> None:
        self.description = f"redis {redacted_url(url)}"
        self.client: Any = aioredis.from_url(url, socket_timeout=timeout,
                                             socket_connect_timeout=timeout, decode_responses=True)
        self._clock = clock
        self.key = prefix + "revocations"
        self.revision_key = prefix + "revocations:revision"
        self.channel = prefix + "events"
        self._add = self.client.register_script(_ADD)
        self._remove = self.client.register_script(_REMOVE)

    def _keys(self) -> list[str]:
        return [self.key, self.revision_key, self.channel]

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"{self.description}: {e.__class__.__name__}: {e}")

    async def revision(self) -> str:
        try:
            return str(await self.client.get(self.revision_key) or "0")
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e

    async def load(self) -> RevocationList:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                rev, raw = await pipe.get(self.revision_key).hgetall(self.key).execute()
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e
        now = self._clock.wall()
        records = [Revocation.from_json(v) for v in raw.values()]
        return RevocationList(str(rev or "0"), tuple(
            r for r in records if r.expires is None or r.expires > now))

    async def add(self, revocation: Revocation) -> str:
        try:
            return str(await self._add(keys=self._keys(), args=[
                revocation.key, revocation.to_json(), int(self._clock.wall())]))
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e

    async def remove(self, key: str) -> bool:
        try:
            return int(await self._remove(keys=self._keys(), args=[key])) >= 0
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


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
