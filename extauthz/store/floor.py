"""The local floor: each worker's last good snapshot of the Redis store, in a file.

Every time a worker installs policies or revocations from Redis it writes them here
(atomically, mode 0600, under a lock the workers of a host share), with the revision, epoch,
record count and last recorded write they came with. It is read at start, so a worker that
(re)starts while Redis is empty, unreachable or behind enforces what it last enforced rather
than nothing, and it is what ``extauthz store reseed --from-snapshot FILE`` restores a store
from. A section is never replaced by one whose store history does not hold its write (a
worker that never saw a write the store later lost must not overwrite one that did).

::

    {"version": 1, "store": "redis redis://host:6379/0 extauthz:", "written_at": 1767225600,
     "policies": {"epoch": "…", "counter": 12, "count": 40, "write": "12:…",
                  "items": [{policy document}, …]},
     "revocations": {"epoch": "…", "counter": 7, "count": 3, "write": "7:…", "items": [{record}, …]}}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.config import StoreSettings
from extauthz.errors import ConfigError
from extauthz.store.redis_hash import StoreState, descends, redacted_url, write_counter

log = logging.getLogger("extauthz.floor")
VERSION = 1
KINDS = ("policies", "revocations")


def store_id(url: str, prefix: str) -> str:
    """Which store a floor belongs to (no password): a floor of another store is not adopted."""
    return f"{redacted_url(url)} {prefix}"


def floor_path(store: StoreSettings) -> str:
    """``store.snapshot_file``, or next to the state file: ``.extauthz/state.json`` ->
    ``.extauthz/state.snapshot.json``."""
    if store.snapshot_file:
        return store.snapshot_file
    p = Path(store.state_file)
    return str(p.with_name(p.stem + ".snapshot.json"))


@dataclass(frozen=True)
class FloorSection:
    state: StoreState
    items: tuple[Mapping[str, Any], ...]  # policy documents, or revocation records


def _section(kind: str, raw: object, where: str) -> FloorSection:
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise ConfigError(f"{where}: '{kind}' is not a snapshot section")
    epoch, counter, count = raw.get("epoch"), raw.get("counter"), raw.get("count")
    write = raw.get("write")  # absent in a floor an older release wrote
    if (not isinstance(epoch, str | None) or isinstance(counter, bool)
            or not isinstance(counter, int) or not isinstance(count, int | None)
            or not isinstance(write, str | None)
            or not all(isinstance(i, dict) for i in raw["items"])):
        raise ConfigError(f"{where}: '{kind}' has a malformed epoch, counter, count, write or "
                          "items")
    items = tuple(raw["items"])
    return FloorSection(StoreState(epoch, counter, count, len(items),
                                   history=() if write is None else (write,)), items)


def _keep(held: object, state: StoreState) -> str | None:
    """Why the section in the file stays rather than ``state``'s, or None. Within one epoch:
    it is at a later revision (another worker was faster), or it holds a write that the
    history ``state`` was read with does not (the store lost it; this worker never saw it)."""
    if not isinstance(held, dict) or held.get("epoch") != state.epoch:
        return None
    counter, write = held.get("counter"), held.get("write")
    if isinstance(counter, int) and counter > state.counter:
        return "later"
    if (isinstance(write, str) and write != state.write and state.history
            and write_counter(write) >= write_counter(state.history[-1])
            and not descends(write, state.history)):
        return "lost"
    return None


def read_snapshot_file(path: str | Path) -> tuple[str, dict[str, FloorSection]]:
    """The store a snapshot file was written for, and its sections. Errors name the file."""
    where = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the snapshot {where}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"{where} is not a snapshot (not JSON: {e})") from e
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ConfigError(f"{where} is not a version {VERSION} extauthz snapshot")
    return str(doc.get("store", "")), {k: _section(k, doc[k], where) for k in KINDS if k in doc}


class Floor:
    def __init__(self, path: str, store: str) -> None:
        self.path = Path(path)
        self.store = store
        self._warned = False

    def read(self) -> dict[str, FloorSection]:
        """This store's sections; nothing when the file is missing, unreadable or another store's."""
        if not self.path.exists():
            return {}
        try:
            store, sections = read_snapshot_file(self.path)
        except ConfigError as e:
            log.error("floor: ignoring the local snapshot: %s", e.message)
            return {}
        if store != self.store:
            log.warning("floor: %s was written for %s, not %s; not adopted", self.path, store,
                        self.store)
            return {}
        return sections

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, kind: str, state: StoreState, items: Sequence[Mapping[str, Any]]) -> None:
        """Record one kind; a section of the same epoch at a later revision (another worker
        was faster) is not replaced. A floor that cannot be written is logged once: the
        worker still serves, it just has no floor after a restart."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                doc: dict[str, Any] = {}
                with contextlib.suppress(OSError, ValueError):
                    old = json.loads(self.path.read_text(encoding="utf-8"))
                    if isinstance(old, dict) and old.get("store") == self.store:
                        doc = old
                held = doc.get(kind)
                why = _keep(held, state)
                if why == "lost" and isinstance(held, dict):
                    log.error("floor: %s holds %s write %s, which the store's history (revision "
                              "%s) does not: the store lost it. Kept, not replaced: restore the "
                              "store from this file (`extauthz store reseed --from-snapshot %s`)",
                              self.path, kind, held.get("write"), state.revision, self.path)
                if why is not None:
                    return
                doc.update({"version": VERSION, "store": self.store, "written_at": int(time.time()),
                            kind: {"epoch": state.epoch, "counter": state.counter,
                                   "count": state.count, "write": state.write,
                                   "items": list(items)}})
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(doc, out, separators=(",", ":"))
                os.replace(tmp, self.path)
        except OSError as e:
            if not self._warned:
                log.error("floor: cannot write the local snapshot %s (%s); a restart while Redis "
                          "has lost data will find no floor: set store.snapshot_file to a "
                          "writable path", self.path, e.strerror)
                self._warned = True
