"""Passkeys, single-use challenges, failure counters and the cookie signing key.

Redis (shared by every replica), under ``store.prefix``:
  ``webauthn:passkeys:<user>``       hash: credential id -> passkey JSON (durable)
  ``webauthn:users``                 hash: <user> -> {"iss", "sub"} (for the CLI)
  ``webauthn:challenge:<ceremony>:<user>``  JSON, EX challenge_ttl, taken with GETDEL
  ``webauthn:enrolment-grant:<user>`` an operator's one-time allowance to add a first
                                     passkey without a fresh sign-in; EX its TTL, taken with DEL
  ``webauthn:failures:<user>``       attempts counter (INCR before each ceremony is
                                     processed), expires after failure_window
  ``stepup:signing-key``             PEM, set once with NX
``<user>`` is a hash of issuer and subject: no personal data in key names.

Embedded: the same records in one JSON file (``store.state_file``), changed under an
advisory lock and replaced atomically, so several worker processes can share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from extauthz.clock import Clock
from extauthz.errors import StoreUnavailable
from extauthz.store.redis_client import is_redis_url, redis_client
from extauthz.store.redis_hash import redacted_url

_T = TypeVar("_T")


def user_key(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Passkey:
    credential_id: str  # base64url
    public_key: str  # base64url COSE key
    sign_count: int
    name: str
    created: int
    last_used: int | None
    transports: tuple[str, ...]
    issuer: str
    subject: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Passkey:
        d = json.loads(text)
        d["transports"] = tuple(d.get("transports") or ())
        return cls(**d)


class StepupStore(Protocol):
    description: str

    async def put_challenge(self, user: str, ceremony: str, data: dict[str, Any], ttl: int) -> None: ...

    async def take_challenge(self, user: str, ceremony: str) -> dict[str, Any] | None: ...

    async def passkeys(self, user: str) -> list[Passkey]: ...

    async def save_passkey(self, user: str, passkey: Passkey) -> None: ...

    async def update_passkey(self, user: str, passkey: Passkey) -> bool: ...

    async def remove_passkey(self, user: str, credential_id: str) -> bool: ...

    async def remove_all(self, user: str) -> int: ...

    async def users_for_subject(self, subject: str) -> list[tuple[str, str, str]]: ...

    async def grant_enrolment(self, user: str, issuer: str, subject: str, ttl: int) -> None: ...

    async def enrolment_granted(self, user: str) -> bool: ...

    async def take_enrolment_grant(self, user: str) -> bool: ...

    async def add_failure(self, user: str, window: int) -> int: ...

    async def failures(self, user: str) -> int: ...

    async def clear_failures(self, user: str) -> None: ...

    async def signing_key(self, generate: Callable[[], bytes]) -> bytes: ...

    async def close(self) -> None: ...


class RedisStepupStore:
    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        self.description = f"redis {redacted_url(url)}"
        self._r: Any = redis_client(url, timeout)
        self._p = prefix
        self._update = self._r.register_script(
            "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then "
            "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end return 0")

    def _k(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    @contextlib.asynccontextmanager
    async def _io(self) -> Any:
        try:
            yield self._r
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"{self.description}: {e.__class__.__name__}: {e}") from e

    async def put_challenge(self, user: str, ceremony: str, data: dict[str, Any], ttl: int) -> None:
        async with self._io() as r:
            await r.set(self._k("webauthn", "challenge", ceremony, user), json.dumps(data), ex=ttl)

    async def take_challenge(self, user: str, ceremony: str) -> dict[str, Any] | None:
        async with self._io() as r:
            raw = await r.getdel(self._k("webauthn", "challenge", ceremony, user))
        return json.loads(raw) if raw else None

    async def passkeys(self, user: str) -> list[Passkey]:
        async with self._io() as r:
            raw = await r.hgetall(self._k("webauthn", "passkeys", user))
        return sorted((Passkey.from_json(v) for v in raw.values()), key=lambda p: p.created)

    async def save_passkey(self, user: str, passkey: Passkey) -> None:
        async with self._io() as r, r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("webauthn", "passkeys", user), passkey.credential_id, passkey.to_json())
            pipe.hset(self._k("webauthn", "users"), user,
                      json.dumps({"iss": passkey.issuer, "sub": passkey.subject}))
            await pipe.execute()

    async def update_passkey(self, user: str, passkey: Passkey) -> bool:
        """Write back a used passkey only if it still exists (a removal wins a race)."""
        async with self._io():
            return bool(await self._update(keys=[self._k("webauthn", "passkeys", user)],
                                           args=[passkey.credential_id, passkey.to_json()]))

    async def remove_passkey(self, user: str, credential_id: str) -> bool:
        async with self._io() as r:
            return bool(await r.hdel(self._k("webauthn", "passkeys", user), credential_id))

    async def remove_all(self, user: str) -> int:
        async with self._io() as r:
            key = self._k("webauthn", "passkeys", user)
            count = int(await r.hlen(key))
            await r.delete(key)
            return count

    async def users_for_subject(self, subject: str) -> list[tuple[str, str, str]]:
        async with self._io() as r:
            raw = await r.hgetall(self._k("webauthn", "users"))
        out = []
        for user, text in raw.items():
            d = json.loads(text)
            if d["sub"] == subject:
                out.append((user, d["iss"], d["sub"]))
        return sorted(out, key=lambda t: t[1])

    async def grant_enrolment(self, user: str, issuer: str, subject: str, ttl: int) -> None:
        async with self._io() as r:
            await r.set(self._k("webauthn", "enrolment-grant", user),
                        json.dumps({"iss": issuer, "sub": subject}), ex=ttl)

    async def enrolment_granted(self, user: str) -> bool:
        async with self._io() as r:
            return bool(await r.exists(self._k("webauthn", "enrolment-grant", user)))

    async def take_enrolment_grant(self, user: str) -> bool:
        """Use the grant up: True for exactly one caller (DEL is atomic)."""
        async with self._io() as r:
            return bool(await r.delete(self._k("webauthn", "enrolment-grant", user)))

    async def add_failure(self, user: str, window: int) -> int:
        """Count one attempt and return the new count, atomically (INCR and EXPIRE NX in one
        MULTI): parallel callers each get their own number."""
        async with self._io() as r, r.pipeline(transaction=True) as pipe:
            key = self._k("webauthn", "failures", user)
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            count, _ = await pipe.execute()
            return int(count)

    async def failures(self, user: str) -> int:
        async with self._io() as r:
            return int(await r.get(self._k("webauthn", "failures", user)) or 0)

    async def clear_failures(self, user: str) -> None:
        async with self._io() as r:
            await r.delete(self._k("webauthn", "failures", user))

    async def signing_key(self, generate: Callable[[], bytes]) -> bytes:
        async with self._io() as r:
            key = self._k("stepup", "signing-key")
            await r.set(key, generate().decode(), nx=True)
            return str(await r.get(key)).encode()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._r.aclose()


class FileStepupStore:
    """All step-up state in one JSON file, shared by processes through an advisory lock."""

    def __init__(self, path: str, clock: Clock) -> None:
        self.path = Path(path)
        self.description = f"file {self.path}"
        self._clock = clock

    @contextlib.contextmanager
    def locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        """The whole state, read under the lock (and written back when ``write``)."""
        with self._state(write) as state:
            yield state

    @contextlib.contextmanager
    def _state(self, write: bool = True) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
                except FileNotFoundError:
                    state = {}
                except (OSError, ValueError) as e:
                    raise StoreUnavailable(f"{self.description} is unreadable: {e}") from e
                for section in ("passkeys", "users", "challenges", "failures", "grants"):
                    state.setdefault(section, {})
                self._expire(state)
                yield state
                if write:
                    tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        json.dump(state, f)
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _expire(self, state: dict[str, Any]) -> None:
        now = self._clock.wall()
        for section in ("challenges", "failures", "grants"):
            for k in [k for k, v in state[section].items() if v["expires"] <= now]:
                del state[section][k]

    async def _run(self, fn: Callable[[], _T]) -> _T:
        """File locks and I/O happen in a thread: the event loop serving Check never waits."""
        return await asyncio.to_thread(fn)

    async def put_challenge(self, user: str, ceremony: str, data: dict[str, Any], ttl: int) -> None:
        def work() -> None:
            with self._state() as s:
                s["challenges"][f"{ceremony}:{user}"] = {"data": data,
                                                         "expires": self._clock.wall() + ttl}
        await self._run(work)

    async def take_challenge(self, user: str, ceremony: str) -> dict[str, Any] | None:
        def work() -> dict[str, Any] | None:
            with self._state() as s:
                entry = s["challenges"].pop(f"{ceremony}:{user}", None)
            return entry["data"] if entry else None
        return await self._run(work)

    async def passkeys(self, user: str) -> list[Passkey]:
        def work() -> list[Passkey]:
            with self._state(write=False) as s:
                raw = s["passkeys"].get(user, {})
            return sorted((Passkey.from_json(v) for v in raw.values()), key=lambda p: p.created)
        return await self._run(work)

    async def save_passkey(self, user: str, passkey: Passkey) -> None:
        def work() -> None:
            with self._state() as s:
                s["passkeys"].setdefault(user, {})[passkey.credential_id] = passkey.to_json()
                s["users"][user] = {"iss": passkey.issuer, "sub": passkey.subject}
        await self._run(work)

    async def update_passkey(self, user: str, passkey: Passkey) -> bool:
        def work() -> bool:
            with self._state() as s:
                mine = s["passkeys"].get(user, {})
                if passkey.credential_id not in mine:
                    return False
                mine[passkey.credential_id] = passkey.to_json()
                return True
        return await self._run(work)

    async def remove_passkey(self, user: str, credential_id: str) -> bool:
        def work() -> bool:
            with self._state() as s:
                return s["passkeys"].get(user, {}).pop(credential_id, None) is not None
        return await self._run(work)

    async def remove_all(self, user: str) -> int:
        def work() -> int:
            with self._state() as s:
                return len(s["passkeys"].pop(user, {}))
        return await self._run(work)

    async def users_for_subject(self, subject: str) -> list[tuple[str, str, str]]:
        def work() -> list[tuple[str, str, str]]:
            with self._state(write=False) as s:
                return sorted(((u, d["iss"], d["sub"]) for u, d in s["users"].items()
                               if d["sub"] == subject), key=lambda t: t[1])
        return await self._run(work)

    async def grant_enrolment(self, user: str, issuer: str, subject: str, ttl: int) -> None:
        def work() -> None:
            with self._state() as s:
                s["grants"][user] = {"iss": issuer, "sub": subject,
                                     "expires": self._clock.wall() + ttl}
        await self._run(work)

    async def enrolment_granted(self, user: str) -> bool:
        def work() -> bool:
            with self._state(write=False) as s:
                return user in s["grants"]
        return await self._run(work)

    async def take_enrolment_grant(self, user: str) -> bool:
        """Use the grant up: True for exactly one caller (under the file lock)."""
        def work() -> bool:
            with self._state() as s:
                return s["grants"].pop(user, None) is not None
        return await self._run(work)

    async def add_failure(self, user: str, window: int) -> int:
        """Count one attempt and return the new count, under the file lock (one writer at a
        time across threads and processes)."""
        def work() -> int:
            with self._state() as s:
                entry = s["failures"].setdefault(user, {"count": 0,
                                                        "expires": self._clock.wall() + window})
                entry["count"] += 1
                return int(entry["count"])
        return await self._run(work)

    async def failures(self, user: str) -> int:
        def work() -> int:
            with self._state(write=False) as s:
                return int(s["failures"].get(user, {}).get("count", 0))
        return await self._run(work)

    async def clear_failures(self, user: str) -> None:
        def work() -> None:
            with self._state() as s:
                s["failures"].pop(user, None)
        await self._run(work)

    async def signing_key(self, generate: Callable[[], bytes]) -> bytes:
        def work() -> bytes:
            with self._state() as s:
                if "signing_key" not in s:
                    s["signing_key"] = generate().decode()
                return str(s["signing_key"]).encode()
        return await self._run(work)

    async def close(self) -> None:
        return None


def open_stepup_store(url: str | None, prefix: str, timeout: float, state_file: str,
                      clock: Clock) -> StepupStore:
    if is_redis_url(url):
        assert url is not None
        return RedisStepupStore(url, prefix, timeout)
    return FileStepupStore(state_file, clock)
