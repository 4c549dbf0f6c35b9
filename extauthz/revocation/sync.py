"""Every worker's in-memory revocation set, followed like the policies.

Revocations are never lost by a store losing data: the worker keeps its set while the store
is refused (see ``extauthz/store/follow.py``), keeps it in the local floor across restarts, and when
an operator restores the store (a new epoch) it keeps every record still in force that the
restore left out, and writes it back. Records past their TTL are dropped on the poll, as the
store drops them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from extauthz.revocation.model import Revocation, RevocationList, RevocationSet
from extauthz.revocation.store import FileRevocationStore, RedisRevocationStore
from extauthz.store.floor import Floor
from extauthz.store.follow import Followed, TrackedSnapshot
from extauthz.store.redis_hash import StoreState

log = logging.getLogger("extauthz.revocation")


def _target(r: Revocation) -> tuple[str, str, str]:
    return (r.kind, r.issuer, r.value)


class RevocationSnapshot(TrackedSnapshot):
    what = "revocations"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Revocation] = []  # kept across a restore, not yet written back
        self._next_expiry: float | None = None

    def build(self, loaded: RevocationList) -> RevocationSet:
        return RevocationSet(loaded.records, loaded.revision)

    def describe(self, loaded: RevocationList) -> str:
        return f"revision {loaded.revision}, {len(loaded.records)} in force"

    def set(self, value: Any, revision: str) -> None:
        super().set(value, revision)
        expiries = [r.expires for r in (value.records if value is not None else ())
                    if r.expires is not None]
        self._next_expiry = min(expiries) if expiries else None

    def floor_items(self) -> list[Mapping[str, Any]]:
        current = self.current
        return [] if current is None else [json.loads(r.to_json()) for r in current.records]

    def from_floor_items(self, revision: str, items: Sequence[Mapping[str, Any]]) -> RevocationList:
        now = self.wall()
        records = (Revocation(**dict(i)) for i in items)
        return RevocationList(revision, tuple(r for r in records
                                              if r.expires is None or r.expires > now))

    def carry_over(self, loaded: RevocationList,
                   state: StoreState) -> tuple[RevocationList, list[Revocation]]:
        """On a new epoch (an operator's restore), keep every record still in force that the
        store lacks: a restore never lifts a revocation. Undone revocations are not kept:
        an undo is a change within one epoch."""
        held = self.current
        if held is not None and self.state is not None and state.epoch != self.state.epoch:
            self._pending = list(held.records)
        if not self._pending:
            return loaded, []
        now = self.wall()
        there = {_target(r) for r in loaded.records}
        kept = [r for r in self._pending
                if _target(r) not in there and (r.expires is None or r.expires > now)]
        self._pending = kept
        if kept:
            log.warning("revocations: the store (revision %s) lacks %d revocation(s) this worker "
                        "enforced before it was restored; keeping them and writing them back",
                        loaded.revision, len(kept))
        return RevocationList(loaded.revision, loaded.records + tuple(kept)), kept

    def written_back(self) -> None:
        self._pending = []

    def prune(self) -> None:
        if self._next_expiry is None or self._next_expiry > self.wall():
            return
        current, revision = self.current, self.revision
        if current is None or revision is None:
            return
        now = self.wall()
        self.set(RevocationSet([r for r in current.records if r.expires is None or r.expires > now],
                               current.revision), revision)

    @property
    def current(self) -> RevocationSet | None:
        return self.value  # type: ignore[no-any-return]


def followed(store: RedisRevocationStore | FileRevocationStore, snapshot: RevocationSnapshot,
             floor: Floor | None = None) -> Followed:
    if isinstance(store, RedisRevocationStore):
        return Followed("revocations", store.description, store.load, snapshot, redis=store,
                        floor=floor, write_back=store.write_back)
    return Followed("revocations", store.description, store.load, snapshot)
