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
from urllib.parse import parse_qsl, unquote, unquote_plus

import redis.asyncio as aioredis
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, to_bool
from redis.asyncio.sentinel import Sentinel

from extauthz.errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)
SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")
_SECRET_WORDS = ("pass", "pwd", "secret", "token")  # in a query key: its value is redacted
_SERVICE = re.compile(r"^[A-Za-z0-9._-]+$")
# The '@' that ends the userinfo: the last one followed by a host (up to the path or query).
# A password may hold '@'; one holding '/', '?' or '#' unencoded is ambiguous (refused).
_USERINFO_END = re.compile(r"@(?=[^/?#@]*(?:[/?#]|$))")
_PLAIN_USER = re.compile(r"^[A-Za-z0-9._-]*$")
_OPTION_NAME = re.compile(r"^[A-Za-z_]{1,32}$")
# The query options a connection takes (the ones redis-py reads from a redis:// URL and
# its connection classes accept); anything else would fail at the first command.
_OPTIONS = frozenset({"db", "username", "password", "client_name", "socket_timeout",
                      "socket_connect_timeout", "socket_keepalive", "socket_read_size",
                      "retry_on_timeout", "health_check_interval", "max_connections",
                      "protocol"})
_TLS_OPTIONS = frozenset({"ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs",
                          "ssl_ca_data", "ssl_ca_path", "ssl_check_hostname", "ssl_min_version",
                          "ssl_ciphers", "ssl_password", "ssl_include_verify_flags",
                          "ssl_exclude_verify_flags"})
_SHOWN_OPTIONS = _OPTIONS | _TLS_OPTIONS | {"sentinel_username"}
_KIND = {int: "a whole number", float: "a number", to_bool: "true or false"}
_SENTINEL_HINT = "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT]/SERVICE[/DB]"
_REDIS_HINT = "redis://[[USER]:PASSWORD@]HOST:PORT/DB (rediss:// for TLS)"


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


def split_userinfo(rest: str) -> tuple[str | None, str]:
    """``rest`` (the URL after ``://``) as its userinfo (None if it has none) and the part
    from the host on. Found by position, not by a URL parser: a password with '/', '?', '#'
    or '@' in it must never be taken for a path, a query or a host."""
    ends = [m.start() for m in _USERINFO_END.finditer(rest)]
    if not ends:
        return None, rest
    return rest[:ends[-1]], rest[ends[-1] + 1:]


def _is_secret(key: str) -> bool:
    """A query key whose value is not shown: one naming a password, secret or token, and
    any key that is not a known option (a misspelled ``pasword=`` is still a password)."""
    name = unquote_plus(key).lower()
    return any(word in name for word in _SECRET_WORDS) or name not in _SHOWN_OPTIONS


def redacted_url(url: str) -> str:
    """The URL without its secrets, for logs and messages: the whole userinfo but a plain
    user name (everything between ``://`` and the last ``@`` before the host), and the value
    of every query key that names a password, secret or token (percent-encoded or not) or
    is not a known option."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, after = split_userinfo(rest)
    head = f"{scheme}{sep}"
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        head += f"{user}:***@" if colon and _PLAIN_USER.match(user) else "***@"
    base, q, query = after.partition("?")
    if q:
        query = "&".join(f"{k}=***" if _is_secret(k) else f"{k}{eq}{v}"
                         for k, eq, v in (item.partition("=") for item in query.split("&")))
    return f"{head}{base}{q}{query}"


def _bad(url: str, why: str) -> ConfigError:
    hint = _SENTINEL_HINT if url.lower().startswith(SENTINEL_SCHEMES) else _REDIS_HINT
    return ConfigError(f"config: the Redis URL {redacted_url(url)!r} {why}; write {hint}")


def _userinfo(url: str, rest: str) -> tuple[str | None, str]:
    userinfo, after = split_userinfo(rest)
    if userinfo is not None and any(c in userinfo for c in "/?#"):
        raise _bad(url, "is ambiguous: a '/', '?' or '#' comes before its last '@'; "
                        "percent-encode them in the password (%2F %3F %23, and %40 for '@')")
    if "#" in after:
        raise _bad(url, "has a '#'; percent-encode it (%23)")
    return userinfo, after


def _query_options(url: str, query: str, tls: bool, sentinel: bool) -> dict[str, Any]:
    """The query's options, converted as redis-py converts them: an unknown, repeated, empty
    or unconvertible option is a ConfigError naming the option (never its value)."""
    allowed = _OPTIONS | (_TLS_OPTIONS if tls else frozenset()) | (
        frozenset(_SENTINEL_OPTIONS) if sentinel else frozenset())
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        named = repr(key) if _OPTION_NAME.match(key) else "an option"
        if key not in allowed:
            if key in _TLS_OPTIONS:
                raise _bad(url, f"has the TLS option {named} but does not use TLS (rediss)")
            raise _bad(url, f"has the unknown option {named}; known: "
                            f"{', '.join(sorted(allowed))}")
        if key in options:
            raise _bad(url, f"gives {named} twice")
        if value == "":
            raise _bad(url, f"gives {named} no value")
        parser = URL_QUERY_ARGUMENT_PARSERS.get(key)
        try:
            options[key] = value if parser is None else parser(value)
        except (TypeError, ValueError):
            kind = _KIND.get(parser, "a valid value")
            raise _bad(url, f"has a {key} that is not {kind}") from None
    return options


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
    userinfo, after = _userinfo(url, rest)
    after, _, query = after.partition("?")
    hosts, _, path = after.partition("/")
    if not hosts:
        raise _bad(url, "names no sentinel")
    service, _, db = path.partition("/")
    if not _SERVICE.match(service):
        raise _bad(url, "names no SERVICE (the name the sentinels monitor, e.g. mymaster)")
    if db and not db.isdigit():
        raise _bad(url, f"has {db!r} where the DB number belongs")
    # The master's options mean what they mean in a redis:// URL (redis-py's reading).
    options: dict[str, Any] = {}
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    query_options = _query_options(url, query, tls, sentinel=True)
    for key in ("username", "password", "db"):
        if key in query_options and (key in options or (key == "db" and db)):
            raise _bad(url, f"gives its {key} twice (in the URL and in its query)")
    options.update({"db": int(db or 0)}, **query_options)
    sentinel: dict[str, Any] = {key[len("sentinel_"):]: options.pop(key)
                                for key in _SENTINEL_OPTIONS if key in options}
    if tls:
        sentinel.update({k: v for k, v in options.items() if k.startswith("ssl_")}, ssl=True)
    return SentinelTarget(_hosts(url, hosts), service, tls, options, sentinel)


def _check_plain_url(url: str) -> None:
    """A redis:// rediss:// unix:// URL redis-py would misread, or refuse only at the first
    command, is a ConfigError now."""
    scheme, _, rest = url.partition("://")
    _, after = _userinfo(url, rest)
    _query_options(url, after.partition("?")[2], scheme == "rediss", sentinel=False)


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
        _check_plain_url(url)
        try:
            client: aioredis.Redis = aioredis.from_url(url, decode_responses=decode_responses,
                                                       **sockets)
        except (TypeError, ValueError) as e:  # its message may quote part of the password
            option = re.search(r"Invalid value for '(\w+)'", str(e))
            raise _bad(url, f"has an invalid {option[1]}" if option else
                       "cannot be read") from None
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
