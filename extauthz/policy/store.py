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
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from extauthz.errors import ConfigError, PolicyInvalid, PolicyNotFound, StoreUnavailable
from extauthz.policy.model import Policy, documents_from_text, parse_policies, policies_to_yaml
from extauthz.schema.messages import utf8_error_line
from extauthz.store.redis_client import is_redis_url
from extauthz.store.redis_hash import BUMP, GUARD, RedisHash, StoreState, redacted_url

log = logging.getLogger(__name__)


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
KUBELET_DATA = "..data"  # a ConfigMap volume's symlink to its current version


def _file_text(policies: Sequence[Policy]) -> str:
    """A policy file's text; with none left, a comment, since an empty file reads as one
    truncated mid-write (the last good set is kept) and no policies is meant here."""
    return policies_to_yaml(list(policies)) or "# no policies (the last one was deleted)\n"


class FilePolicyStore:
    """Policies in one YAML/JSON file, or in every *.yaml/*.yml/*.json file at the top of a
    directory (names starting with a dot are not read).

    A directory may be a Kubernetes ConfigMap volume: kubelet writes each version into a new
    ``..<timestamp>`` directory and swaps the ``..data`` symlink to it, and every ``NAME.yaml``
    is a symlink into ``..data``. Such a directory is read through ``..data``, resolved at the
    start of a read and again at its end (moved: not a consistent version, unreadable), so a
    read never mixes two versions nor reads one kubelet is removing, and a swap is a change
    the poll sees (the target, and the files' inodes and mtimes). It is read-only: change
    the ConfigMap.

    A path once read that goes away, a policy file's link to nothing, or a file gone mid-read
    is StoreUnavailable (the last good set stays), never fewer policies: an existing empty
    directory, or a ConfigMap with no keys, is "no policies".

    A file is rewritten atomically (temp file + rename) under an advisory lock; in a
    directory each policy is its own ``<id>.yaml``, written atomically one by one. Reads,
    YAML parsing, compiling and the lock run in a thread, off the event loop serving Check.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._dir_hint = path.endswith("/")  # a directory that does not exist yet
        self._was_dir = False  # it was a directory when last seen: it still is one, gone or not
        self._seen = False  # the path existed once: from then on, gone is unreadable, not empty
        self._written: frozenset[Path] = frozenset()  # the files that had text at the last read
        self._reported: str | None = None
        self.description = f"file {self.path}"

    @property
    def is_dir(self) -> bool:
        if self._dir_hint or self._was_dir:
            return True
        self._was_dir = self.path.is_dir()
        return self._was_dir

    def _unavailable(self, message: str) -> StoreUnavailable:
        """A read that cannot give the whole set: the caller keeps its last good one. Logged
        once per distinct message, as an error naming the path."""
        if message != self._reported:
            log.error("policy store %s: %s; keeping the policies last read", self.path, message)
            self._reported = message
        return StoreUnavailable(message)

    def _version(self) -> Path | None:
        """A ConfigMap volume's current version directory (``..data`` resolved), or None.
        A ``..data`` that points nowhere is unreadable, never "no policies"."""
        data = self.path / KUBELET_DATA
        if not data.is_symlink():
            return None
        try:
            return data.resolve(strict=True)
        except OSError as e:
            raise self._unavailable(f"{data} points nowhere ({e.strerror or e})") from e

    def _missing(self, what: Path) -> list[Path]:
        """A configured path that is not there: no policies only if it never was (a store
        ``policy apply`` has yet to create); once seen, it went away, and an empty set would
        lift every deny policy in it."""
        if self._seen:
            raise self._unavailable(f"{what} does not exist any more (it did); restore it, or "
                                    "leave an empty directory for no policies")
        return []

    def _files(self, within: Path | None = None) -> list[Path]:
        if self.is_dir:
            top = within or self.path
            if not top.exists():  # a version ..data named is gone: never "no policies"
                if within is not None:
                    raise self._unavailable(f"{self.path / KUBELET_DATA} names {within}, which "
                                            "is gone (a version kubelet removed)")
                return self._missing(top)
            try:
                named = sorted(p for p in top.iterdir() if p.suffix in _SUFFIXES
                               and not p.name.startswith("."))
            except OSError as e:  # a version kubelet removed while it was listed
                raise self._unavailable(f"cannot list {top}: {e.strerror or e}") from e
            self._seen = True
            files = []
            for p in named:
                if p.is_file():
                    files.append(p)
                elif p.is_symlink():  # a policy file's link to nothing: never skipped
                    raise self._unavailable(f"{self.path / p.name} is a link to "
                                            f"{_link(p)}, which does not exist")
            if within is not None and not files and self._visible_policy_names():
                raise self._unavailable(f"{self.path / KUBELET_DATA} ({within.name}) holds no "
                                        "policy file while the volume lists some: a version "
                                        "being removed, not an empty ConfigMap")
            return files
        if not self.path.exists():
            if self.path.is_symlink():
                raise self._unavailable(f"{self.path} is a link to {_link(self.path)}, "
                                        "which does not exist")
            return self._missing(self.path)
        self._seen = True
        return [self.path]

    def _visible_policy_names(self) -> list[str]:
        try:
            return [p.name for p in self.path.iterdir()
                    if p.suffix in _SUFFIXES and not p.name.startswith(".")]
        except OSError:
            return []

    def signature(self) -> tuple[object, ...]:
        """Cheap change detection: the ConfigMap version, and the names, sizes, inodes and
        mtimes of the files (of what the symlinks point at). Unreadable: a value that never
        repeats, so the next poll reads (and reports) again."""
        try:
            version = self._version() if self.is_dir else None
            out: list[object] = [str(version)]
            for f in self._files(version):
                with contextlib.suppress(FileNotFoundError):
                    st = f.stat()
                    out.append((f.name, st.st_size, st.st_ino, st.st_mtime_ns))
        except StoreUnavailable:
            return (object(),)
        return tuple(out)

    def _read(self) -> tuple[str, list[tuple[Path, Policy]]]:
        """Every policy with the file it is in: all valid, ids unique across the files, or a
        PolicyInvalid naming the file (and policy) at fault. A read that cannot see the whole
        set (a path gone, a file gone mid-read, a ConfigMap swapped mid-read) is a
        StoreUnavailable, never a smaller set."""
        digest = hashlib.sha256()
        located: list[tuple[Path, Policy]] = []
        owner: dict[str, Path] = {}
        written: set[Path] = set()
        version = self._version() if self.is_dir else None
        for f in self._files(version):
            named = self.path / f.name if version is not None else f  # as the operator sees it
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:  # an edit saved in another encoding: the file's fault
                raise PolicyInvalid(utf8_error_line(str(named), e)) from e
            except FileNotFoundError as e:
                raise self._unavailable(f"{named} went away while it was read") from e
            except OSError as e:
                raise self._unavailable(f"cannot read {named}: {e.strerror}") from e
            if not text and named in self._written:  # truncated to be rewritten, mid-write
                raise self._unavailable(f"{named} is empty (it had policies): being written? "
                                        "To remove its policies, delete it or leave a comment")
            if text:
                written.add(named)
            digest.update(f.name.encode() + b"\0" + text.encode() + b"\0")
            for p in parse_policies(documents_from_text(text, str(named)), str(named)):
                if p.id in owner:
                    raise PolicyInvalid(f"{named}: policy {p.id!r} is also defined in "
                                        f"{owner[p.id]}; ids must be unique across the files")
                owner[p.id] = named
                located.append((named, p))
        if version is not None and self._version() != version:
            raise self._unavailable(f"{self.path / KUBELET_DATA} moved while it was read (a "
                                    "ConfigMap update); not a consistent version, read again")
        self._reported = None
        self._written = frozenset(written)
        return digest.hexdigest()[:16], located

    def read_all(self) -> list[Policy]:
        """Every policy, read as ``load`` reads them (the same files, the same checks), for
        ``policy validate|apply -f`` and ``store reseed --policies-from``."""
        return [p for _, p in self._read()[1]]

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

    def _writable(self) -> None:
        if self.is_dir and (self.path / KUBELET_DATA).is_symlink():
            raise PolicyInvalid(f"{self.path} is a Kubernetes ConfigMap volume (it has "
                                f"{KUBELET_DATA}): change the ConfigMap (in git), not the files")

    def _apply(self, policies: Sequence[Policy]) -> str:
        self._writable()
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
                self._write_atomic(self.path, _file_text(list(merged.values())))
            revision, _ = self._read()
        return revision

    async def delete(self, policy_id: str) -> str:
        return await asyncio.to_thread(self._delete, policy_id)

    def _delete(self, policy_id: str) -> str:
        self._writable()
        with self._locked():
            _, located = self._read()
            owner = next((f for f, p in located if p.id == policy_id), None)
            if owner is None:
                raise PolicyNotFound(f"no policy with id {policy_id!r} in {self.description}")
            rest = [p for f, p in located if f == owner and p.id != policy_id]
            if self.is_dir and not rest:
                owner.unlink()
            else:
                self._write_atomic(owner, _file_text(rest))
            revision, _ = self._read()
        return revision

    async def close(self) -> None:
        return None


def _link(path: Path) -> str:
    try:
        return repr(os.readlink(path))
    except OSError:
        return "a target"


def open_store(url: str | None, prefix: str, timeout: float,
               policies: str | None = None) -> PolicyStore | None:
    """The store named by ``store.policies`` (files) or else ``store.url``; None when no
    store is configured."""
    if policies is not None:
        if not policies or "://" in policies:
            raise ConfigError(f"config: 'store.policies' is {policies!r}; give the path of a "
                              "policy file or directory (e.g. /etc/extauthz/policies)")
        if url and url.startswith("file://"):
            raise ConfigError("config: 'store.policies' and a file:// 'store.url' both say where "
                              "the policies are; keep one (store.policies is for when store.url "
                              "is Redis)")
        return FilePolicyStore(policies)
    if not url:
        return None
    if is_redis_url(url):
        return RedisPolicyStore(url, prefix, timeout)
    if url.startswith("file://"):
        return FilePolicyStore(url[len("file://"):])
    raise ConfigError(f"config: 'store.url' is {redacted_url(url)!r}; use redis://HOST:PORT/DB, "
                      "rediss://… (TLS), unix:///path.sock, redis+sentinel://HOST:PORT/SERVICE, "
                      "or file:///path/policies.yaml")
