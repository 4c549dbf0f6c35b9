"""Where policies live: Redis (shared by every replica) or an embedded file or directory.

Both implement one interface and pass one contract test suite:
- ``load()``: every policy and the revision they form;
- ``apply(policies)``: create or replace them, atomically for the batch;
- ``delete(id)``.

Redis keys (under ``store.prefix``, default ``extauthz:``): ``policies`` (hash: id ->
canonical JSON), ``policies:revision`` (a counter, with its epoch, count, write history and
loss marker: see ``extauthz/store/redis_hash.py``), and the ``events`` channel, where every change publishes
``{"kind": "policies", "revision": N}``. Changes run as Lua scripts, so a batch, the
revision bump and the event are one atomic step; a store that lost data refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from extauthz.errors import ConfigError, PolicyInvalid, PolicyNotFound, StoreUnavailable
from extauthz.policy.model import Policy, documents_from_text, parse_policies, policies_to_yaml
from extauthz.store.redis_hash import BUMP, GUARD, RedisHash, StoreState, redacted_url


@dataclass(frozen=True)
class PolicySet:
    revision: str
    policies: tuple[Policy, ...]


class PolicyStore(Protocol):
    description: str

    async def load(self) -> PolicySet: ...

    async def apply(self, policies: Sequence[Policy]) -> str: ...

    async def delete(self, policy_id: str) -> str: ...

    async def close(self) -> None: ...


_APPLY = GUARD + """
for i = 2, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
""" + BUMP
_DELETE = GUARD + """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return -1 end
""" + BUMP


class RedisPolicyStore(RedisHash):
    kind = "policies"

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        super().__init__(url, timeout, prefix + "policies", prefix + "policies:revision",
                         prefix + "events")
        self.policies_key = self.key
        self._apply = self.client.register_script(_APPLY)
        self._delete = self.client.register_script(_DELETE)

    async def load(self) -> PolicySet:
        return (await self.load_state())[1]

    async def load_state(self, since: int | None = None) -> tuple[StoreState, PolicySet]:
        """The policies and the state they were read at (its write history back to the
        counter ``since``). Parsing 2,000 policies takes tens of milliseconds: it runs in a
        thread, off the event loop that answers checks."""
        state, raw = await self.read_state(since)
        return state, await asyncio.to_thread(self._parse, state.revision, raw)

    def _parse(self, revision: str, raw: dict[str, str]) -> PolicySet:
        docs = []
        for pid, text in sorted(raw.items()):
            try:
                docs.append(json.loads(text))
            except ValueError as e:
                raise PolicyInvalid(f"{self.description}: stored policy {pid!r} is not JSON") from e
        return PolicySet(revision, tuple(parse_policies(docs, self.description)))

    async def apply(self, policies: Sequence[Policy]) -> str:
        return str(await self.run(self._apply, [self.kind, *_fields(policies)]))

    async def replace_all(self, policies: Sequence[Policy]) -> str:
        """An operator's restore from git: exactly this set, under a new reseed epoch."""
        return await self.reseed([(p.id, _canonical(p)) for p in policies], replace=True)

    async def delete(self, policy_id: str) -> str:
        rev = await self.run(self._delete, [self.kind, policy_id])
        if rev == -1:
            raise PolicyNotFound(f"no policy with id {policy_id!r} in {self.description}")
        return str(rev)


def _canonical(p: Policy) -> str:
    return json.dumps(p.document, separators=(",", ":"), sort_keys=True)


def _fields(policies: Sequence[Policy]) -> list[str]:
    return [x for p in policies for x in (p.id, _canonical(p))]


_SUFFIXES = (".yaml", ".yml", ".json")


class FilePolicyStore:
    """Policies in one YAML/JSON file, or in every *.yaml/*.yml/*.json file of a directory.

    A file is rewritten atomically (temp file + rename) under an advisory lock; in a
    directory each policy is its own ``<id>.yaml``, written atomically one by one. Reads,
    YAML parsing, compiling and the lock run in a thread, off the event loop serving Check.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._dir_hint = path.endswith("/")  # a directory that does not exist yet
        self.description = f"file {self.path}"

    @property
    def is_dir(self) -> bool:
        return self._dir_hint or self.path.is_dir()

    def _files(self) -> list[Path]:
        if self.is_dir:
            if not self.path.exists():
                return []
            return sorted(p for p in self.path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        return [self.path] if self.path.exists() else []

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """Cheap change detection: names, sizes and mtimes."""
        out = []
        for f in self._files():
            with contextlib.suppress(FileNotFoundError):
                st = f.stat()
                out.append((f.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _read(self) -> tuple[str, list[tuple[Path, Policy]]]:
        digest = hashlib.sha256()
        located: list[tuple[Path, Policy]] = []
        docs: list[object] = []
        owners: list[Path] = []
        for f in self._files():
            try:
                text = f.read_text(encoding="utf-8")
            except OSError as e:
                raise StoreUnavailable(f"cannot read {f}: {e.strerror}") from e
            digest.update(f.name.encode() + b"\0" + text.encode() + b"\0")
            for doc in documents_from_text(text, str(f)):
                docs.append(doc)
                owners.append(f)
        policies = parse_policies(docs, self.description)
        located = list(zip(owners, policies, strict=True))
        return digest.hexdigest()[:16], located

    async def load(self) -> PolicySet:
        revision, located = await asyncio.to_thread(self._read)
        return PolicySet(revision, tuple(p for _, p in located))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = (self.path if self.is_dir else self.path.parent) / ".extauthz-policies.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    async def apply(self, policies: Sequence[Policy]) -> str:
        return await asyncio.to_thread(self._apply, policies)

    def _apply(self, policies: Sequence[Policy]) -> str:
        with self._locked():
            _, located = self._read()
            if self.is_dir:
                self.path.mkdir(parents=True, exist_ok=True)
                where = {p.id: f for f, p in located}
                for p in policies:
                    target = where.get(p.id, self.path / f"{p.id}.yaml")
                    if target.name != f"{p.id}.yaml":
                        raise PolicyInvalid(f"policy {p.id!r} is defined in {target}, which holds "
                                            "other policies too; edit that file instead")
                    self._write_atomic(target, policies_to_yaml([p]))
            else:
                merged = {p.id: p for _, p in located}
                merged.update({p.id: p for p in policies})
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._write_atomic(self.path, policies_to_yaml(list(merged.values())))
            revision, _ = self._read()
        return revision

    async def delete(self, policy_id: str) -> str:
        return await asyncio.to_thread(self._delete, policy_id)

    def _delete(self, policy_id: str) -> str:
        with self._locked():
            _, located = self._read()
            owner = next((f for f, p in located if p.id == policy_id), None)
            if owner is None:
                raise PolicyNotFound(f"no policy with id {policy_id!r} in {self.description}")
            rest = [p for f, p in located if f == owner and p.id != policy_id]
            if self.is_dir and not rest:
                owner.unlink()
            else:
                self._write_atomic(owner, policies_to_yaml(rest))
            revision, _ = self._read()
        return revision

    async def close(self) -> None:
        return None


def open_store(url: str | None, prefix: str, timeout: float) -> PolicyStore | None:
    """The store named by ``store.url``; None when no store is configured."""
    if not url:
        return None
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisPolicyStore(url, prefix, timeout)
    if url.startswith("file://"):
        return FilePolicyStore(url[len("file://"):])
    raise ConfigError(f"config: 'store.url' is {redacted_url(url)!r}; use redis://HOST:PORT/DB, "
                      "rediss://… (TLS), unix:///path.sock, or file:///path/policies.yaml")
