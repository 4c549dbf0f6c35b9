"""A token verifier for one test issuer, wired as a worker wires it: the issuer's keys fetched
over real HTTP, a clock the test moves by hand, and the HTTP client closed afterwards; and a
policy snapshot holding given policy documents."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from extauthz.clock import Clock
from extauthz.config import Settings
from extauthz.identity.jwks import HttpFetcher, IssuerKeys
from extauthz.identity.verify import TokenVerifier
from extauthz.policy.model import parse_policies
from extauthz.policy.store import PolicySet
from extauthz.policy.sync import PolicySnapshot
from extauthz.revocation.sync import RevocationSnapshot
from tests.support.clock import FakeClock
from tests.support.issuer import LocalIssuer
from tests.support.settings import make_settings


@dataclass(frozen=True)
class Verifying:
    issuer: LocalIssuer
    settings: Settings
    clock: FakeClock
    keys: IssuerKeys
    verifier: TokenVerifier


@asynccontextmanager
async def verifying(issuer: LocalIssuer, settings: Settings | None = None, *, load: bool = True,
                    fetch_timeout: float = 2.0, clock: FakeClock | None = None,
                    revocations: RevocationSnapshot | None = None,
                    **issuer_fields: Any) -> AsyncIterator[Verifying]:
    """A verifier for ``issuer`` (``make_settings(issuer)`` unless ``settings`` are given, with
    ``issuer_fields`` replaced in its issuer entry), on ``clock`` (a new one at the wall time
    unless given). With ``load``, the keys are fetched first, as a worker does at start, and
    must load; without, the first token fetches them."""
    settings = settings or make_settings(issuer)
    if issuer_fields:
        settings = dataclasses.replace(
            settings, issuers=(dataclasses.replace(settings.issuers[0], **issuer_fields),))
    clock = clock or FakeClock(now_wall=time.time())
    fetcher = HttpFetcher(fetch_timeout)
    keys = IssuerKeys(settings.issuers[0], settings.jwks, fetcher, clock)
    verifier = TokenVerifier(settings, {issuer.issuer: keys}, clock, revocations)
    try:
        if load:
            assert await keys.refresh(), keys.last_error
        yield Verifying(issuer, settings, clock, keys, verifier)
    finally:
        await fetcher.close()


def policy_snapshot(docs: Iterable[dict[str, Any]], clock: Clock, revision: str = "1") -> PolicySnapshot:
    """A snapshot holding these policy documents, as if a store had just delivered them."""
    snapshot = PolicySnapshot(clock)
    snapshot.install(PolicySet(revision, tuple(parse_policies(list(docs)))))
    return snapshot
