"""What the policy and revocation stores share in Redis: a hash of records, a revision
counter, and the events channel that tells every worker about a change."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from extauthz.errors import StoreUnavailable


def redacted_url(url: str) -> str:
    """The URL without its password (in the userinfo or a ``password=`` query), for logs."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        query = "&".join(
            f"{k}=***" if k.lower() in ("password", "pass", "pwd") else f"{k}{sep}{v}"
            for k, sep, v in (item.partition("=") for item in parts.query.split("&")))
        parts = parts._replace(query=query)
    return urlunsplit(parts)


class RedisHash:
    def __init__(self, url: str, timeout: float, key: str, revision_key: str, channel: str) -> None:
        self.description = f"redis {redacted_url(url)}"
        self.client: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True)
        self.key = key
        self.revision_key = revision_key
        # Set when the counter starts: after a flush and a re-seed the counter repeats, the
        # epoch does not, so no worker mistakes new content for what it already has.
        self.epoch_key = revision_key + ":epoch"
        self.channel = channel

    def unavailable(self, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"{self.description}: {e.__class__.__name__}: {e}")

    def keys(self) -> list[str]:
        return [self.key, self.revision_key, self.channel, self.epoch_key]

    @staticmethod
    def _revision(counter: str | None, epoch: str | None) -> str:
        return f"{epoch or '-'}:{counter or 0}"

    async def revision(self) -> str:
        try:
            counter, epoch = await self.client.mget(self.revision_key, self.epoch_key)
        except (RedisError, OSError) as e:
            raise self.unavailable(e) from e
        return self._revision(counter, epoch)

    async def read(self) -> tuple[str, dict[str, str]]:
        """The revision and every record, read together (MULTI/EXEC)."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                counter, epoch, raw = await (pipe.get(self.revision_key).get(self.epoch_key)
                                             .hgetall(self.key).execute())
        except (RedisError, OSError) as e:
            raise self.unavailable(e) from e
        return self._revision(counter, epoch), raw

    async def run(self, script: Any, args: list[Any]) -> Any:
        try:
            return await script(keys=self.keys(), args=args)
        except (RedisError, OSError) as e:
            raise self.unavailable(e) from e

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
