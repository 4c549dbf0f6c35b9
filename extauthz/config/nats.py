"""``nats`` (``model.NatsSection``) resolved: the seed files read and checked once, at start.

A missing or malformed seed is one ConfigError line naming the key and the fix; the keys
themselves are kept in ``NatsSettings`` (the callout signs and opens with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from extauthz.config.model import NatsSection
from extauthz.errors import ConfigError
from extauthz.nats.nkey import CurvePair, Kind, NkeyError, SigningPair, is_public
from extauthz.store.redis_client import split_userinfo

_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True)
class NatsSettings:
    """The callout's settings; ``servers`` empty: the callout is off."""

    servers: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    issuer: SigningPair | None = None  # signs the answers (auth_callout.issuer)
    xkey: CurvePair | None = None  # opens sealed requests (auth_callout.xkey)
    account: str | None = None
    system_user: str | None = None  # the kick API (nats/kick.py): a system-account user…
    system_password: str | None = None
    system_creds_file: str | None = None  # …or its .creds
    server_keys: frozenset[str] = frozenset()  # empty: requests signed by any server key
    queue_group: str = "extauthz"
    connect_timeout: float = 2.0
    reconnect_max_wait: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.servers)


def redact_url(url: str) -> str:
    """``url`` with its userinfo (between ``://`` and the last ``@``) shown as ``***``: a
    NATS URL may carry the callout's password, which no message or log line may show. Also
    used on free text (nats-py's error messages), where it hides too much rather than too
    little; a Redis URL, with its query options, goes through ``redacted_url``."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    return url if at < 0 else f"{head}{sep}***@{rest[at + 1:]}"


def redact_urls(urls: tuple[str, ...] | list[str]) -> str:
    return ", ".join(redact_url(u) for u in urls)


def _server_keys(keys: tuple[str, ...] | None) -> frozenset[str]:
    for key in keys or ():
        if not is_public(key, Kind.SERVER):
            raise ConfigError(f"config: 'nats.server_keys' has {key!r}, which is not a server "
                              "public nkey; list the servers' N… public keys (their `server_id`), "
                              "or leave it empty to answer any server")
    return frozenset(keys or ())


def _seed_text(path: str | None, key: str, what: str) -> str:
    if path is None:
        raise ConfigError(f"config: 'nats.{key}' is not set; give the file holding {what} "
                          "(nsc or `nk -gen` make one)")
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="ascii").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config: 'nats.{key}' names {path!r}, which cannot be read "
                          f"({type(e).__name__}); give the file holding {what}") from e
    seeds = [ln for ln in lines if ln.startswith("S")]
    if len(seeds) != 1:
        raise ConfigError(f"config: 'nats.{key}' file {path!r} does not hold exactly one nkey "
                          f"seed line; it must hold {what}")
    return seeds[0]


def resolve_nats(n: NatsSection) -> NatsSettings:
    if n.url is None:  # off; the account still names where `policy explain --nats` places users
        return NatsSettings(account=n.account)
    servers = tuple(u.strip() for u in n.url.split(",") if u.strip())
    for url in servers:
        userinfo, _ = split_userinfo(url.partition("://")[2])
        if userinfo is not None and any(c in userinfo for c in "/?#"):  # where does the host start?
            raise ConfigError(f"config: 'nats.url' {redact_url(url)!r} is ambiguous: a '/', '?' or "
                              "'#' comes before its last '@'; percent-encode them in the password "
                              "(%2F %3F %23, and %40 for '@')")
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(f"config: 'nats.url' has {redact_url(url)!r}; write nats://HOST:PORT "
                              "(tls://, ws:// or wss:// too; several separated by commas)")
    given = [k for k in ("password", "token", "creds_file", "nkey_seed_file")
             if getattr(n, k) is not None]
    if len(given) > 1 or (n.password is not None) != (n.user is not None):
        raise ConfigError("config: 'nats' sets the callout's credentials more than one way; give "
                          "user and password, or token, or creds_file, or nkey_seed_file")
    for key in ("creds_file", "nkey_seed_file"):
        path = getattr(n, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"config: 'nats.{key}' names {path!r}, which does not exist; give "
                              "the path of the callout user's file")
    if (n.system_password is not None) != (n.system_user is not None) or (
            n.system_user is not None and n.system_creds_file is not None):
        raise ConfigError("config: 'nats' sets the system account's credentials (for kicking "
                          "revoked connections) wrongly; give system_user and system_password, "
                          "or system_creds_file, or none")
    if n.system_creds_file is not None and not Path(n.system_creds_file).is_file():
        raise ConfigError(f"config: 'nats.system_creds_file' names {n.system_creds_file!r}, "
                          "which does not exist; give the path of a system-account .creds file")
    if not n.account:
        raise ConfigError("config: 'nats.account' is not set; name the account users are placed "
                          "in (one of the server's accounts, e.g. APP)")
    try:
        issuer = SigningPair.from_seed(
            _seed_text(n.issuer_seed_file, "issuer_seed_file", "an account nkey seed (SA…)"),
            Kind.ACCOUNT)
    except NkeyError as e:
        raise ConfigError(f"config: 'nats.issuer_seed_file' {n.issuer_seed_file!r} is not an "
                          f"account nkey seed ({e}); give the SA… seed whose public key is the "
                          "server's auth_callout.issuer") from e
    xkey = None
    if n.xkey_seed_file is not None:
        try:
            xkey = CurvePair.from_seed(
                _seed_text(n.xkey_seed_file, "xkey_seed_file", "a curve seed (SX…)"))
        except NkeyError as e:
            raise ConfigError(f"config: 'nats.xkey_seed_file' {n.xkey_seed_file!r} is not a "
                              f"curve seed ({e}); give the SX… seed whose public key is the "
                              "server's auth_callout.xkey, or null") from e
    return NatsSettings(
        servers=servers, user=n.user, password=n.password, token=n.token,
        creds_file=n.creds_file, nkey_seed_file=n.nkey_seed_file, issuer=issuer, xkey=xkey,
        account=n.account, system_user=n.system_user, system_password=n.system_password,
        system_creds_file=n.system_creds_file, server_keys=_server_keys(n.server_keys),
        queue_group=n.queue_group, connect_timeout=n.connect_timeout,
        reconnect_max_wait=n.reconnect_max_wait)
