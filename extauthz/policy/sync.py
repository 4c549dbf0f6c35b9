"""Every worker's in-memory policy snapshot, and the loops that keep it current.

The loops themselves are in ``extauthz/follow.py``. A failed load keeps the last good
snapshot (and says so); a worker that never loaded one is not ready: its checks are
503 denials.
"""

from __future__ import annotations

from extauthz.follow import Followed, TrackedSnapshot
from extauthz.policy.match import PolicyIndex
from extauthz.policy.store import FilePolicyStore, PolicySet, RedisPolicyStore


class PolicySnapshot(TrackedSnapshot):
    """The compiled policy index this process enforces."""

    what = "policies"

    def build(self, loaded: PolicySet) -> PolicyIndex:
        return PolicyIndex(loaded.policies, loaded.revision)

    def describe(self, loaded: PolicySet) -> str:
        return f"revision {loaded.revision}, {len(loaded.policies)} policies"

    @property
    def index(self) -> PolicyIndex | None:
        return self.value  # type: ignore[no-any-return]

    @index.setter
    def index(self, index: PolicyIndex) -> None:
        self.set(index, index.revision)


def followed(store: RedisPolicyStore | FilePolicyStore, snapshot: PolicySnapshot) -> Followed:
    async def remote_revision() -> str:
        assert isinstance(store, RedisPolicyStore)
        return await store.revision()

    return Followed("policies", store.description, store.load, remote_revision, snapshot)
