"""The callout's connection to NATS: subscribe, answer, reconnect, report.

One connection per worker, as one of the server's ``auth_callout.auth_users``, subscribed to
``$SYS.REQ.USER.AUTH`` in a queue group (``nats.queue_group``), so every worker and replica
shares the requests. Each request: opened when sealed (``Nats-Server-Xkey``), parsed strictly
(``request.py``), decided (``decide.py``), answered (sealed back when it came sealed),
audited (transport ``nats``) and counted. A request that is not a valid authorization
request of our server gets no answer (the server refuses the client at its auth timeout)
and a WARNING line.

Losing the server: the connection closes and is made again after 0.1 s, doubling up to
``nats.reconnect_max_wait``; every failure is one log line, and ``/readyz`` is not ready
while the callout is not connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from extauthz.config.nats import redact_url, redact_urls
from extauthz.decision import Decision, Reason
from extauthz.engine import Engine
from extauthz.nats.decide import UNKNOWN_REQUEST, Decider, request_view
from extauthz.nats.kick import Kicker, close_refused
from extauthz.nats.nkey import Kind, NkeyError, is_public
from extauthz.nats.request import BadAuthRequest, UnknownServer, parse_request
from extauthz.telemetry.metrics import LATENCY_BUCKETS, LabelledCounter

log = logging.getLogger("extauthz.nats")

SUBJECT = "$SYS.REQ.USER.AUTH"
XKEY_HEADER = "Nats-Server-Xkey"
FIRST_RETRY = 0.1


class CalloutMetrics:
    """Decisions by outcome and reason, the time to answer, the connection's state."""

    def __init__(self) -> None:
        self.decisions = LabelledCounter()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, decision: str, reason: str, seconds: float) -> None:
        self.decisions.add(1, {"decision": decision, "reason": reason})
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1
        self.total += seconds

    def histogram(self, worker: str) -> Iterable[Metric]:
        family = HistogramMetricFamily("extauthz_nats_callout_duration_seconds",
                                       "Time to answer a NATS authorization request",
                                       labels=["worker"])
        running, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), list(self.buckets), strict=True):
            running += count
            buckets.append((floatToGoString(bound), float(running)))
        family.add_metric([worker], buckets, self.total)
        return [family]


class Callout:
    """The auth callout of one worker; ``run`` until cancelled."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._settings = engine.settings.nats
        self._decider = Decider(engine)
        self._nc: Client | None = None
        self._inflight: set[asyncio.Task[None]] = set()  # requests being answered
        self.connected = False
        self.note = "not connected yet"
        self.metrics = CalloutMetrics()
        self.kicker = Kicker(engine)  # with system-account credentials: ends revoked connections
        m = engine.metrics
        m.observe("extauthz.nats.decisions", "NATS auth callout decisions by decision and reason",
                  self.metrics.decisions.readings, counter=True)
        m.observe("extauthz.nats.connected", "1 while the NATS auth callout is connected and "
                  "subscribed", lambda: [(int(self.connected), {})], counter=False)
        m.families.append(self.metrics.histogram)

    def readiness(self, ready: bool, status: str) -> tuple[bool, str]:
        """The worker's readiness with the callout's: not ready while it is not connected."""
        if self.connected:
            return ready, f"{status}; NATS callout: connected"
        return False, f"NATS callout: {self.note}" + ("" if not ready else f" ({status})")

    async def _connect(self, closed: asyncio.Event) -> Client:
        s = self._settings

        async def on_closed() -> None:
            closed.set()

        async def on_error(e: Exception) -> None:
            log.warning("NATS callout: %s", redact_url(str(e)))

        options: dict[str, Any] = {}
        if s.user is not None:
            options.update(user=s.user, password=s.password)
        if s.token is not None:
            options["token"] = s.token
        if s.creds_file is not None:
            options["user_credentials"] = s.creds_file
        if s.nkey_seed_file is not None:
            options["nkeys_seed"] = s.nkey_seed_file
        options["connect_timeout"] = s.connect_timeout  # a float; nats-py's annotation says int
        nc = Client()
        try:
            await nc.connect(
                servers=list(s.servers), name="extauthz-auth-callout", allow_reconnect=False,
                closed_cb=on_closed, disconnected_cb=on_closed, error_cb=on_error,
                max_reconnect_attempts=0, **options)
        except BaseException:
            close_refused(nc)
            raise
        await nc.subscribe(SUBJECT, queue=s.queue_group, cb=self._dispatch)
        await nc.flush(timeout=max(1, round(s.connect_timeout)))
        return nc

    async def run(self) -> None:
        wait = FIRST_RETRY
        kicker = asyncio.create_task(self.kicker.run(), name="nats-kick")
        try:
            while True:
                closed = asyncio.Event()
                try:
                    self._nc = await self._connect(closed)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 (every failure is one line, then a retry)
                    self.note = f"cannot connect to {redact_urls(self._settings.servers)}: " + (
                        redact_url(str(e)) or type(e).__name__)
                    log.error("NATS callout: %s; retrying in %.1fs", self.note, wait)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, self._settings.reconnect_max_wait)
                    continue
                self.connected, self.note, wait = True, "connected", FIRST_RETRY
                log.info("NATS callout: connected to %s, answering %s in queue group %r",
                         redact_url(self._nc.connected_url.netloc) if self._nc.connected_url
                         else "?",
                         SUBJECT, self._settings.queue_group)
                await closed.wait()
                self.connected, self.note = False, "connection lost; reconnecting"
                log.error("NATS callout: the connection to NATS was lost; reconnecting")
                with contextlib.suppress(Exception):
                    await self._nc.close()
        finally:
            kicker.cancel()
            with contextlib.suppress(BaseException):
                await kicker
            self.connected = False
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.drain()

    async def _dispatch(self, msg: Msg) -> None:
        """nats-py runs a subscription's callbacks one after another: each request gets its
        own task, so one waiting for an IdP's keys does not hold up the others."""
        task = asyncio.create_task(self._answer(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            await self._on_request(msg)
        except Exception:  # the server refuses the client at its auth timeout
            log.exception("NATS callout: cannot answer a request")

    async def _on_request(self, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            data, server_xkey = self._open(msg)
            request = parse_request(data.decode("ascii", "replace"),
                                    issuer=self._decider.issuer_public, now=self._engine.clock.wall(),
                                    server_keys=self._settings.server_keys)
        except BadAuthRequest as e:
            signer = f" (server key {e.key!r})" if isinstance(e, UnknownServer) else ""
            log.warning("NATS callout: refused an authorization request on %r: %s%s",
                        msg.subject, e, signer)
            self._engine.audit.record(Decision(
                allowed=False, status=400, reason=Reason.BAD_CHECK_REQUEST, description=str(e),
                decision_id=self._decider.next_id()), UNKNOWN_REQUEST)
            self.metrics.observe("deny", Reason.BAD_CHECK_REQUEST, time.perf_counter() - started)
            return
        try:
            answer = await self._decider.decide(request)
        except Exception:
            log.exception("NATS callout: cannot decide a request from %r", request.client_host)
            answer = self._decider.failure(request)
        payload = answer.response.encode()
        xkey = self._settings.xkey
        if server_xkey is not None and xkey is not None:
            payload = xkey.seal(payload, server_xkey)
        decision = answer.decision
        if msg.reply:
            assert self._nc is not None
            await self._nc.publish(msg.reply, payload)
            # only a connection this answer let in is tracked for kicking (never a refused one)
            if decision.allowed and decision.identity is not None:
                self.kicker.remember(request.server_id, request.client_id, decision.identity,
                                     expires=answer.expires)
        self._engine.audit.record(decision, request_view(request))
        outcome = "allow" if decision.allowed else "deny"
        self.metrics.observe(outcome, str(decision.reason), time.perf_counter() - started)
        if not decision.allowed:
            log.info("NATS callout: refused client %s from %r: %s (decision %s)",
                     request.client_id, request.client_host, decision.reason,
                     decision.decision_id)

    def _open(self, msg: Msg) -> tuple[bytes, str | None]:
        """The request JWT, opened when the server sealed it; and the server's xkey."""
        server_xkey = (msg.headers or {}).get(XKEY_HEADER)
        xkey = self._settings.xkey
        if xkey is None:
            if server_xkey is not None:
                raise BadAuthRequest("the request is sealed, but nats.xkey_seed_file is not set")
            return msg.data, None
        if server_xkey is None or not is_public(server_xkey, Kind.CURVE):
            raise BadAuthRequest(f"the request is not sealed (no valid {XKEY_HEADER} header), "
                                 "but nats.xkey_seed_file is set")
        try:
            return xkey.open(msg.data, server_xkey), server_xkey
        except NkeyError as e:
            raise BadAuthRequest(str(e)) from e
