"""Disconnecting live NATS connections whose token is revoked (optional).

A revocation applies to the next connection attempt anyway; with system-account credentials
(``nats.system_user``/``system_password`` or ``system_creds_file``) the callout also ends
the connections it allowed whose token a new revocation covers: it keeps, per worker, the
connections it answered (server id, client id, identity; until the connection's user JWT
expires), checks them whenever the revocation snapshot or the policies change, and sends each
revoked one, and each no NATS policy allows any more, to the server's kick API
(``$SYS.REQ.SERVER.<server id>.KICK`` with ``{"cid": N}``, nats-server 2.10+).

The table stays small: an entry goes when the server reports its connection closed
(``$SYS.ACCOUNT.*.DISCONNECT``) or when it expires (a heap by expiry, looked at on every
``remember`` and every tick); at ``MAX_TRACKED`` live entries a new connection is not tracked,
counted (``not_tracked``) and logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from typing import Any, NamedTuple

from nats.aio.client import Client
from nats.aio.msg import Msg

from extauthz.config.nats import redact_url
from extauthz.engine import Engine
from extauthz.identity.model import Identity
from extauthz.nats.permissions import decide as decide_policy

log = logging.getLogger("extauthz.nats")

KICK_SUBJECT = "$SYS.REQ.SERVER.{}.KICK"
INTERVAL = 0.1  # seconds between looks at the revocation snapshot (a pointer comparison)
DISCONNECT_SUBJECT = "$SYS.ACCOUNT.*.DISCONNECT"  # the server's client_disconnect events
MAX_TRACKED = 100_000
WARN_EVERY = 60.0  # seconds between two "table full" warnings

Key = tuple[str, int]  # (server id, client id)


def close_refused(nc: Client) -> None:
    """The socket of a connection that failed to connect: nats-py leaves it to the garbage
    collector, one more open file per retry until then."""
    with contextlib.suppress(Exception):
        if nc._transport is not None:
            nc._transport.close()  # type: ignore[no-untyped-call]


class Tracked(NamedTuple):
    identity: Identity
    expires: float  # when the connection's user JWT expires


class Kicker:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._settings = engine.settings.nats
        self._live: dict[Key, Tracked] = {}
        self._expiry: list[tuple[float, Key]] = []  # a heap; entries of forgotten keys stay
        self._nc: Client | None = None
        self._warned_at: float | None = None
        self.kicked = 0
        self.not_tracked = 0  # connections not tracked because the table was full

    @property
    def enabled(self) -> bool:
        s = self._settings
        return s.system_user is not None or s.system_creds_file is not None

    @property
    def tracked(self) -> int:
        return len(self._live)

    def remember(self, server_id: str, client_id: int, identity: Identity,
                 expires: float | None = None) -> None:
        """A connection the callout allowed, until ``expires`` (default: its token's)."""
        if not self.enabled:
            return
        self._expire(self._engine.clock.wall())
        key = (server_id, client_id)
        if key not in self._live and len(self._live) >= MAX_TRACKED:
            self._full()
            return
        until = identity.expires_at if expires is None else expires
        self._live[key] = Tracked(identity, until)
        heapq.heappush(self._expiry, (until, key))
        if len(self._expiry) > 2 * len(self._live) + 1024:  # mostly forgotten keys: rebuild
            self._expiry = [(t.expires, k) for k, t in self._live.items()]
            heapq.heapify(self._expiry)

    def forget(self, server_id: str, client_id: int) -> None:
        """A connection the server closed."""
        self._live.pop((server_id, client_id), None)

    def _expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] < now:
            until, key = heapq.heappop(heap)
            tracked = self._live.get(key)
            if tracked is not None and tracked.expires == until:
                del self._live[key]

    def _full(self) -> None:
        self.not_tracked += 1
        now = self._engine.clock.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("NATS kick: %d live connections tracked, the most; new ones are not "
                        "(%d so far): a revocation ends them only when their token expires",
                        len(self._live), self.not_tracked)

    async def _on_disconnect(self, msg: Msg) -> None:
        try:
            event = json.loads(msg.data)
            server_id, client_id = event["server"]["id"], event["client"]["id"]
        except (ValueError, TypeError, KeyError):
            return
        if isinstance(server_id, str) and type(client_id) is int:  # true is not client 1
            self.forget(server_id, client_id)

    async def _connect(self) -> Client:
        s = self._settings
        options: dict[str, Any] = {}
        if s.system_user is not None:
            options.update(user=s.system_user, password=s.system_password)
        if s.system_creds_file is not None:
            options["user_credentials"] = s.system_creds_file
        # nats-py's annotations say int; the seconds are floats (as nats.connect passes them)
        options.update(connect_timeout=s.connect_timeout, reconnect_time_wait=s.reconnect_max_wait)
        nc = Client()
        try:
            await nc.connect(servers=list(s.servers), name="extauthz-kick",
                             max_reconnect_attempts=-1, **options)
        except BaseException:
            close_refused(nc)
            raise
        return nc

    async def run(self) -> None:
        if not self.enabled:
            return
        seen: object = None
        revision: str | None = None
        try:
            while True:
                if self._nc is None:
                    try:
                        self._nc = await self._connect()
                        await self._nc.subscribe(DISCONNECT_SUBJECT, cb=self._on_disconnect)
                    except Exception as e:  # noqa: BLE001 (one line, then again)
                        log.error("NATS kick: cannot connect with the system account's "
                                  "credentials: %s; revoked connections end with their token",
                                  redact_url(str(e)) or type(e).__name__)
                        if self._nc is not None:
                            with contextlib.suppress(Exception):
                                await self._nc.close()
                            self._nc = None
                        await asyncio.sleep(self._settings.reconnect_max_wait)
                        continue
                self._expire(self._engine.clock.wall())
                current = self._engine.revocations.current
                # A kick that failed (NATS reconnecting, a timeout) leaves its connection
                # tracked and the snapshot unseen, so the next tick tries again.
                if current is not seen and await self._sweep():
                    seen = current
                index = self._engine.policies.index
                if (index is not None and index.revision != revision
                        and (revision is None or await self._recheck())):
                    revision = index.revision
                await asyncio.sleep(INTERVAL)
        finally:
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()

    async def _sweep(self) -> bool:
        """Kick every tracked connection whose subject or token is revoked; False if a kick
        failed (it stays tracked)."""
        revocations = self._engine.revocations.current
        if revocations is None or not len(revocations):
            return True
        done = True
        for key, tracked in list(self._live.items()):
            if revocations.token_revoked(tracked.identity):
                done = await self._kick(key, tracked.identity, "is revoked") and done
        return done

    async def _recheck(self) -> bool:
        """The policies changed: a connection no NATS policy allows any more is ended; False
        if a kick failed (it stays tracked)."""
        index = self._engine.policies.index
        if index is None:
            return True
        now = self._engine.clock.wall()
        done = True
        for key, tracked in list(self._live.items()):
            if not decide_policy(index.nats, tracked.identity, now).allowed:
                done = await self._kick(key, tracked.identity,
                                        "is no longer allowed by the policies") and done
        return done

    async def _kick(self, key: Key, identity: Identity, why: str) -> bool:
        """Ask the server to end one connection; it is forgotten only once that succeeded."""
        assert self._nc is not None
        server_id, client_id = key
        try:
            await self._nc.request(KICK_SUBJECT.format(server_id),
                                   json.dumps({"cid": client_id}).encode(), timeout=2)
        except Exception as e:  # noqa: BLE001 (the connection ends with its token anyway)
            log.warning("NATS kick: client %d of server %s (subject %r) not kicked: %s",
                        client_id, server_id, identity.subject, str(e) or type(e).__name__)
            return False
        self._live.pop(key, None)
        self.kicked += 1
        log.info("NATS kick: ended client %d of server %s: subject %r %s", client_id,
                 server_id, identity.subject, why)
        return True
