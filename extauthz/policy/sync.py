"""Every worker's in-memory policy snapshot, and the loops that keep it current.

The loops themselves are in ``extauthz/store/follow.py``. A failed load keeps the last good
snapshot (and says so); a worker that never loaded one is not ready: its checks are
503 denials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from extauthz.policy.match import PolicyIndex
from extauthz.policy.model import parse_policies
from extauthz.policy.store import FilePolicyStore, PolicySet, RedisPolicyStore
from extauthz.store.floor import Floor
from extauthz.store.follow import Followed, TrackedSnapshot


class PolicySnapshot(TrackedSnapshot):
    """The compiled policy index this process enforces."""

    what = "policies"

    def build(self, loaded: PolicySet) -> PolicyIndex:
        return PolicyIndex(loaded.policies, loaded.revision)

    def describe(self, loaded: PolicySet) -> str:
        return f"revision {loaded.revision}, {len(loaded.policies)} policies"

    def floor_items(self) -> list[Mapping[str, Any]]:
        index = self.index
        return [] if index is None else [dict(p.document) for p in index.by_id.values()]

    def from_floor_items(self, revision: str, items: Sequence[Mapping[str, Any]]) -> PolicySet:
        return PolicySet(revision, tuple(parse_policies([dict(i) for i in items], "local floor")))

    @property
    def index(self) -> PolicyIndex | None:
        return self.value  # type: ignore[no-any-return]

    @index.setter
    def index(self, index: PolicyIndex) -> None:
        self.set(index, index.revision)


def followed(store: RedisPolicyStore | FilePolicyStore, snapshot: PolicySnapshot,
             floor: Floor | None = None) -> Followed:
    redis = store if isinstance(store, RedisPolicyStore) else None
    return Followed("policies", store.description, store.load, snapshot, redis=redis, floor=floor)
