"""Is this Redis fit to hold the state (policies, revocations, passkeys, the step-up key)?

Two settings decide whether Redis can lose that state by itself:
- ``maxmemory-policy`` must be ``noeviction``: any other policy deletes keys when memory
  runs out (``volatile-*`` the ones with a TTL, such as failure counters; ``allkeys-*``
  any key, policies and revocations included);
- persistence must be on (``appendonly yes``, or at least RDB ``save`` points): without it
  a restart comes back empty.

Managed Redis often disables ``CONFIG``; then the check says it could not look, and the
operator must check by hand (``store.require_safe_redis: true`` refuses to start then too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError

from extauthz.errors import StoreUnavailable

EVICTION = "eviction"
NO_PERSISTENCE = "no_persistence"
UNCHECKED = "unchecked"
PROBLEMS = (EVICTION, NO_PERSISTENCE, UNCHECKED)


@dataclass(frozen=True)
class RedisSafety:
    problems: tuple[str, ...]
    detail: str  # one line for the log and /readyz

    @property
    def safe(self) -> bool:
        return not self.problems


async def check_redis(client: Any, description: str) -> RedisSafety:
    """Read the settings; StoreUnavailable when Redis cannot be reached at all."""
    try:
        policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy", "")
        aof = (await client.config_get("appendonly")).get("appendonly", "")
        save = (await client.config_get("save")).get("save", "")
    except ResponseError as e:  # CONFIG renamed or disabled (managed Redis), or an ACL says no
        return RedisSafety((UNCHECKED,), (
            f"{description}: could not read its configuration ({e}); check by hand that "
            "maxmemory-policy is noeviction and persistence (appendonly yes) is on"))
    except (RedisError, OSError) as e:
        raise StoreUnavailable(f"{description}: {e.__class__.__name__}: {e}") from e
    problems: list[str] = []
    said: list[str] = []
    if policy != "noeviction":
        problems.append(EVICTION)
        said.append(f"maxmemory-policy is {policy!r}: under memory pressure Redis deletes keys, "
                    "policies and revocations included; set it to noeviction")
    if aof != "yes" and not save.strip():
        problems.append(NO_PERSISTENCE)
        said.append("persistence is off (appendonly no, no save points): a restart comes back "
                    "empty; set appendonly yes")
    if not problems:
        return RedisSafety((), f"{description}: maxmemory-policy noeviction, persistence on")
    return RedisSafety(tuple(problems), f"{description}: " + "; ".join(said))
