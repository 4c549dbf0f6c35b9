"""Disconnecting live NATS connections whose token is revoked (optional).

A revocation applies to the next connection attempt anyway; with system-account credentials
(``nats.system_user``/``system_password`` or ``system_creds_file``) the callout also ends
the connections it allowed whose token a new revocation covers: it keeps, per worker, the
connections it answered (server id, client id, identity; until the token expires), checks
them whenever the revocation snapshot changes, and sends each revoked one to the server's
kick API (``$SYS.REQ.SERVER.<server id>.KICK`` with ``{"cid": N}``, nats-server 2.10+).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import nats
from nats.aio.client import Client

from extauthz.engine import Engine
from extauthz.identity.model import Identity

log = logging.getLogger("extauthz.nats")

KICK_SUBJECT = "$SYS.REQ.SERVER.{}.KICK"
INTERVAL = 0.1  # seconds between looks at the revocation snapshot (a pointer comparison)
MAX_TRACKED = 100_000


class Kicker:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._settings = engine.settings.nats
        self._live: dict[tuple[str, int], Identity] = {}
        self._nc: Client | None = None
        self.kicked = 0

    @property
    def enabled(self) -> bool:
        s = self._settings
        return s.system_user is not None or s.system_creds_file is not None

    def remember(self, server_id: str, client_id: int, identity: Identity) -> None:
        """A connection the callout allowed (dropped when its token expires)."""
        if self.enabled and len(self._live) < MAX_TRACKED:
            self._live[(server_id, client_id)] = identity

    async def _connect(self) -> Client:
        s = self._settings
        options: dict[str, Any] = {}
        if s.system_user is not None:
            options.update(user=s.system_user, password=s.system_password)
        if s.system_creds_file is not None:
            options["user_credentials"] = s.system_creds_file
        return await nats.connect(servers=list(s.servers), name="extauthz-kick",
                                  connect_timeout=s.connect_timeout,
                                  reconnect_time_wait=s.reconnect_max_wait,
                                  max_reconnect_attempts=-1, **options)

    async def run(self) -> None:
        if not self.enabled:
            return
        seen: object = None
        try:
            while True:
                if self._nc is None:
                    try:
                        self._nc = await self._connect()
                    except Exception as e:  # noqa: BLE001 (one line, then again)
                        log.error("NATS kick: cannot connect with the system account's "
                                  "credentials: %s; revoked connections end with their token",
                                  str(e) or type(e).__name__)
                        await asyncio.sleep(self._settings.reconnect_max_wait)
                        continue
                current = self._engine.revocations.current
                if current is not seen:
                    seen = current
                    await self._sweep()
                await asyncio.sleep(INTERVAL)
        finally:
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()

    async def _sweep(self) -> None:
        revocations = self._engine.revocations.current
        now = self._engine.clock.wall()
        for key, identity in list(self._live.items()):
            if identity.expires_at < now:
                del self._live[key]
            elif revocations is not None and len(revocations) and revocations.token_revoked(identity):
                del self._live[key]
                await self._kick(*key, identity)

    async def _kick(self, server_id: str, client_id: int, identity: Identity) -> None:
        assert self._nc is not None
        try:
            await self._nc.request(KICK_SUBJECT.format(server_id),
                                   json.dumps({"cid": client_id}).encode(), timeout=2)
        except Exception as e:  # noqa: BLE001 (the connection ends with its token anyway)
            log.warning("NATS kick: client %d of server %s (subject %r) not kicked: %s",
                        client_id, server_id, identity.subject, str(e) or type(e).__name__)
            return
        self.kicked += 1
        log.info("NATS kick: ended client %d of server %s: subject %r is revoked", client_id,
                 server_id, identity.subject)
