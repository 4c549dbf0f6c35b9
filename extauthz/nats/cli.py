"""``extauthz policy explain --nats --token T``: which NATS policy decides a connection
presenting this token, why the others do not, and the permissions it grants — what a
running callout would answer, from the same engine. Nothing is written, audited or counted."""

from __future__ import annotations

import datetime

from extauthz.config import Settings
from extauthz.decision import Reason
from extauthz.engine import build_engine
from extauthz.errors import KeysUnavailable, TokenError
from extauthz.nats.permissions import connection_expiry, decide, why_not
from extauthz.nats.reply import permissions
from extauthz.policy.model import NatsPermissions


def _grant_lines(grant: NatsPermissions) -> list[str]:
    claims = permissions(grant)
    return [f"  {name}: " + "; ".join(f"{k} {' '.join(v)}" for k, v in claims[key].items())
            for name, key in (("publish", "pub"), ("subscribe", "sub"))]


async def explain_nats(token: str | None, settings: Settings) -> int:
    engine = build_engine(settings, worker=False)
    try:
        await engine.load_once()
        index = engine.policies.index
        print(f"connection: NATS, {'a token' if token else 'no token'}")
        if index is None:
            print(f"decision: DENY 503 ({Reason.POLICIES_UNAVAILABLE}): policies not loaded "
                  f"({engine.policies.note or 'empty'})")
            return 1
        if token is None:
            print(f"decision: DENY 401 ({Reason.TOKEN_MISSING}): no token")
            return 1
        try:
            identity = await engine.verifier.verify(token)
        except TokenError as e:
            print(f"decision: DENY 401 ({e.code}): {e.message}")
            return 1
        except KeysUnavailable as e:
            print(f"decision: DENY 503 ({Reason.KEYS_UNAVAILABLE}): {e.message}")
            return 1
        now = engine.clock.wall()
        verdict = decide(index.nats, identity, now)
        for policy in index.nats:
            if verdict.policy is not None and policy.id == verdict.policy.id:
                why = "MATCHED: its require is met; it decides"
            else:
                problem = why_not(policy, identity, now)
                why = problem if problem is not None else (
                    f"met, but {verdict.policy.id} comes first (priority, then id)"
                    if verdict.policy is not None else "met")
            print(f"  {policy.id}: {why}")
        if not index.nats:
            print("  (no NATS policies: every connection is refused)")
    finally:
        await engine.close()
    grant = verdict.permissions
    if grant is None:
        status = 403
        print(f"decision: DENY {status} ({verdict.reason}): {verdict.description}")
        return 1
    account = grant.account or settings.nats.account or "(nats.account is not set)"
    assert verdict.policy is not None  # a grant comes from the policy that decided
    expires = datetime.datetime.fromtimestamp(connection_expiry(verdict.policy, identity),
                                              datetime.UTC)
    print(f"decision: ALLOW ({Reason.ALLOWED}): account {account}, user "
          f"{identity.username or identity.subject!r}, until {expires:%Y-%m-%dT%H:%M:%SZ}")
    for line in _grant_lines(grant):
        print(line)
    return 0
