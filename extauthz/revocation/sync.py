"""Every worker's in-memory revocation set, followed like the policies."""

from __future__ import annotations

from extauthz.follow import Followed, TrackedSnapshot
from extauthz.revocation.model import RevocationList, RevocationSet
from extauthz.revocation.store import FileRevocationStore, RedisRevocationStore


class RevocationSnapshot(TrackedSnapshot):
    what = "revocations"

    def build(self, loaded: RevocationList) -> RevocationSet:
        return RevocationSet(loaded.records, loaded.revision)

    def describe(self, loaded: RevocationList) -> str:
        return f"revision {loaded.revision}, {len(loaded.records)} in force"

    @property
    def current(self) -> RevocationSet | None:
        return self.value  # type: ignore[no-any-return]


def followed(store: RedisRevocationStore | FileRevocationStore, snapshot: RevocationSnapshot) -> Followed:
    async def remote_revision() -> str:
        assert isinstance(store, RedisRevocationStore)
        return await store.revision()

    return Followed("revocations", store.description, store.load, remote_revision, snapshot)
