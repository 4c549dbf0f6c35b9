"""The one place a Redis client is made: a plain URL, or a Sentinel-managed master.

``redis://`` / ``rediss://`` (TLS) / ``unix://``: ``redis.asyncio.from_url``, as always.

``redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB][?QUERY]`` (and
``rediss+sentinel://`` for TLS): redis-py's Sentinel support. The hosts are the sentinels
(port 26379 when left out); SERVICE is the name they monitor (``sentinel monitor SERVICE …``).
The password, the DB and the query (``ssl_ca_certs=…`` and the other ``redis://`` options)
mean what they mean in a ``redis://`` URL and are for the master; the sentinels get the TLS
settings and their own ``sentinel_username`` / ``sentinel_password`` from the query, if they
need any. Every connection asks a sentinel where the master is, so after a failover new
connections (a command after an error, the events subscription after it reconnects) reach
the promoted replica; a connection to a demoted master is dropped on its first read-only
error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from extauthz.errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)
SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")
_SECRET_OPTIONS = ("password", "pass", "pwd", "sentinel_password")
_SERVICE = re.compile(r"^[A-Za-z0-9._-]+$")


def is_redis_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(REDIS_SCHEMES)


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    tls: bool
    master: Mapping[str, Any]  # the master's connection options: password, db, TLS files…
    sentinel: Mapping[str, Any]  # the sentinels' own: sentinel_password, TLS


def redacted_url(url: str) -> str:
    """The URL without its password (in the userinfo or a ``password=`` query), for logs."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        query = "&".join(
            f"{k}=***" if k.lower() in _SECRET_OPTIONS else f"{k}{sep}{v}"
            for k, sep, v in (item.partition("=") for item in parts.query.split("&")))
        parts = parts._replace(query=query)
    return urlunsplit(parts)


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"config: the Redis URL {redacted_url(url)!r} {why}; write "
                       "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT]/SERVICE[/DB]")


def _hosts(url: str, text: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in text.split(","):
        m = _HOST.match(item)
        if m is None:
            raise _bad(url, f"has {item!r} where a sentinel's HOST:PORT belongs")
        port = int(m["port"] or SENTINEL_PORT)
        if not 0 < port < 65536:
            raise _bad(url, f"has the port {port}")
        hosts.append((m["v6"] or m["name"], port))
    return tuple(hosts)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, the service and the options of a ``redis+sentinel://`` URL; a
    ConfigError (naming the URL without its password) for anything else."""
    scheme, _, rest = url.partition("://")
    tls = scheme == "rediss+sentinel"
    if scheme not in ("redis+sentinel", "rediss+sentinel"):
        raise _bad(url, "is not a Sentinel URL")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not hosts:
        raise _bad(url, "names no sentinel")
    service, _, db = path.partition("/")
    if not _SERVICE.match(service):
        raise _bad(url, "names no SERVICE (the name the sentinels monitor, e.g. mymaster)")
    if db and not db.isdigit():
        raise _bad(url, f"has {db!r} where the DB number belongs")
    # The master's options are a redis:// URL's: let redis-py read them the same way.
    plain = f"{'rediss' if tls else 'redis'}://{userinfo}{at}sentinel/{db or 0}"
    options: dict[str, Any] = dict(parse_url(plain + (f"?{query}" if query else "")))
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    sentinel: dict[str, Any] = {key[len("sentinel_"):]: options.pop(key)
                                for key in _SENTINEL_OPTIONS if key in options}
    if tls:
        sentinel.update({k: v for k, v in options.items() if k.startswith("ssl_")}, ssl=True)
    return SentinelTarget(_hosts(url, hosts), service, tls, options, sentinel)


class SentinelRedis(aioredis.Redis):
    """A Sentinel-managed master's client that also closes its sentinel connections."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


def redis_client(url: str, timeout: float, *, decode_responses: bool = True) -> aioredis.Redis:
    """A client for ``url`` (any of ``REDIS_SCHEMES``), with ``timeout`` seconds per call and
    per connect. Nothing connects until the first command."""
    sockets = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not url.startswith(SENTINEL_SCHEMES):
        client: aioredis.Redis = aioredis.from_url(url, decode_responses=decode_responses,
                                                   **sockets)
        return client
    target = parse_sentinel_url(url)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs={**sockets, **target.sentinel}, **sockets)
    master = manager.master_for(target.service, redis_class=SentinelRedis,
                                decode_responses=decode_responses, ssl=target.tls,
                                **target.master)
    assert isinstance(master, SentinelRedis)
    master.sentinel_manager = manager
    return master
