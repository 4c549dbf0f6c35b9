"""The plain-HTTP Check listener: HTTP/1.1 parsed by llhttp (``httptools``) on the engine's
event loop, one asyncio protocol per connection.

Envoy keeps a pool of connections to an ``http_service`` and reuses them: connections are
kept alive and pipelined requests are answered in order. What a client cannot do: send a
request line and headers over ``max_header_bytes`` or more than ``max_headers`` lines (431,
414 for a long target), a body over 8 KiB (413; a smaller one is read and ignored), take
longer than ``header_timeout`` to deliver a started request (408), stay idle past
``idle_timeout``, stop reading its answers for ``header_timeout`` (aborted), or open more
than ``max_connections`` (closed at once). Bytes llhttp
refuses get a 400. Each such answer closes the connection, is audited as
``bad_check_request``, and never reaches the engine: none of them is an allow.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import httptools

from extauthz.check_http.answer import AnswerEncoder
from extauthz.check_http.view import RequestViewBuilder
from extauthz.decision import Decision, Reason
from extauthz.denials import json_body
from extauthz.pipeline import INTERNAL, CheckPipeline

log = logging.getLogger("extauthz.check_http")

BODY_LIMIT = 8192
PIPELINE_DEPTH = 16  # requests read ahead of their answers; past this, reading pauses...
PIPELINE_LIMIT = 256  # ...but one read can hold more: past this many, the connection is refused
SWEEP_EVERY = 0.25


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    idle_timeout: float
    max_connections: int


def refusal(status: int, description: str) -> Decision:
    """A check request the transport could not read: answered, audited, never decided."""
    return Decision(allowed=False, status=status, reason=Reason.BAD_CHECK_REQUEST,
                    description=description, decision_id="bad-check-request",
                    response_headers=(("content-type", "application/json"),),
                    body=json_body("bad_request", description))


class _Refused(Exception):
    """Raised inside a parser callback; the connection is answered ``decision`` and closed."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.description)
        self.decision = decision


class _Request:
    __slots__ = ("close", "head", "headers", "method", "target")

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], close: bool) -> None:
        self.method, self.target, self.headers, self.close = method, target, headers, close
        self.head = method == "HEAD"


class CheckHttpProtocol(asyncio.Protocol):
    """One connection: parse, queue, answer in order."""

    def __init__(self, listener: CheckHttpListener) -> None:
        self._listener = listener
        self._limits = listener.limits
        self._loop = listener.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[_Request] = collections.deque()
        self._task: asyncio.Task[None] | None = None  # answering the queue, while set
        self._closing = False  # answer what is queued, then close
        self._refusal: Decision | None = None  # answered after the queue, then closed
        self._writable: asyncio.Future[None] | None = None
        self._write_paused_at = 0.0  # when the client stopped reading its answers (0: it reads)
        self._reading_paused = False
        # the request being read
        self._reading = False
        self._target: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._size = 0
        self._body = 0
        self.deadline = 0.0

    # -- connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self._listener.admit(self):
            self._transport.abort()
            return
        self.deadline = self._loop.time() + self._limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.forget(self)
        self._closing = True
        self._queue.clear()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()
        self._write_paused_at = self._loop.time()

    def resume_writing(self) -> None:
        self._write_paused_at = 0.0
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refusal is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(refusal(400, "upgrade and CONNECT are not check requests"))
        except httptools.HttpParserError as e:
            cause = e.__context__
            self._refuse(cause.decision if isinstance(cause, _Refused)
                         else refusal(400, "the check request is not valid HTTP/1.1"))

    # -- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reading = True
        self._target, self._headers, self._size, self._body = [], [], 0, 0
        self.deadline = self._loop.time() + self._limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._size += len(url)
        if self._size > self._limits.max_header_bytes:
            raise _Refused(refusal(414, "the check request's target is too long"))
        self._target.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > self._limits.max_header_bytes:
            raise _Refused(refusal(431, "the check request's headers are too large"))
        if len(self._headers) >= self._limits.max_headers:
            raise _Refused(refusal(431, "the check request has too many headers"))
        self._headers.append((name.decode("latin-1").lower(), value.decode("utf-8", "replace")))

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > BODY_LIMIT:
            raise _Refused(refusal(413, "a check request carries no body"))

    def on_message_complete(self) -> None:
        if self._parser.should_upgrade():  # refused when feed_data raises HttpParserUpgrade
            return
        self._reading = False
        self.deadline = self._loop.time() + self._limits.idle_timeout
        method = self._parser.get_method().decode("ascii", "replace")
        target = b"".join(self._target).decode("utf-8", "replace")
        if len(self._queue) >= PIPELINE_LIMIT:
            raise _Refused(refusal(400, "too many pipelined check requests"))
        close = not self._parser.should_keep_alive() or self._listener.draining
        self._queue.append(_Request(method, target, self._headers, close))
        if close:
            self._stop_reading()
        elif len(self._queue) >= PIPELINE_DEPTH and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._answer_soon()

    # -- answers ------------------------------------------------------------------------
    def _answer_soon(self) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._answer_queue())

    async def _answer_queue(self) -> None:
        try:
            while self._queue:
                request = self._queue.popleft()
                if self._reading_paused and len(self._queue) < PIPELINE_DEPTH // 2:
                    self._reading_paused = False
                    if self._transport is not None and not self._closing:
                        self._transport.resume_reading()
                answer = await self._listener.answer(request)
                if self._writable is not None:
                    await self._writable
                if self._transport is None or self._transport.is_closing():
                    return
                self._transport.write(answer)
                if request.close:
                    self.close()
                    return
            if self._refusal is not None:
                self._send_refusal(self._refusal)
            elif self._listener.draining and not self._reading:
                self.close()
        finally:
            self._task = None

    def _refuse(self, decision: Decision) -> None:
        """Answer what is queued, then ``decision``, then close; read nothing more."""
        self._refusal = decision
        self._stop_reading()
        if self._task is None:
            self._send_refusal(decision)

    def _send_refusal(self, decision: Decision) -> None:
        self._listener.refused_request(decision)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._listener.encoder.encode(decision, close=True))
        self.close()

    def _stop_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # -- the listener's sweep -----------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Close a slow client (408) or an idle connection past its deadline; abort one that
        has not read its answers for ``header_timeout`` (it would hold its slot forever)."""
        if (self._write_paused_at and now - self._write_paused_at > self._limits.header_timeout
                and self._transport is not None):
            log.warning("check connection aborted: the client read no answer for %.0fs",
                        now - self._write_paused_at)
            self._closing = True
            self._transport.abort()
            return
        if self._task is not None or self._closing or now < self.deadline:
            return
        if self._reading:
            self._refuse(refusal(408, "the check request did not arrive in time"))
        elif not self._queue:
            self.close()

    def drain(self) -> None:
        """The listener stops: an idle connection closes now, a busy one after its answer."""
        if self._task is None and not self._reading and not self._queue:
            self.close()


class CheckHttpListener:
    """The listening socket, its connections and what they share (pipeline, encoder)."""

    def __init__(self, *, pipeline: CheckPipeline, builder: RequestViewBuilder, limits: Limits,
                 loop: asyncio.AbstractEventLoop,
                 spoofable: Callable[[], frozenset[str]] = frozenset) -> None:
        self.pipeline = pipeline
        self.builder = builder
        self.limits = limits
        self.loop = loop
        self.encoder = AnswerEncoder(decision_id_header=pipeline.decision_id_header,
                                     spoofable=spoofable)
        self.connections: set[CheckHttpProtocol] = set()
        self.refused = 0  # connections closed at max_connections
        self.draining = False
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._fallbacks = {(head, close): self.encoder.encode(INTERNAL, head=head, close=close)
                           for head in (False, True) for close in (False, True)}

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        self._server = await self.loop.create_server(
            lambda: CheckHttpProtocol(self), host, port, reuse_port=reuse_port, backlog=1024)
        self._sweeper = self.loop.create_task(self._sweep(), name="check_http sweep")

    def admit(self, connection: CheckHttpProtocol) -> bool:
        if len(self.connections) >= self.limits.max_connections or self.draining:
            self.refused += 1
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: CheckHttpProtocol) -> None:
        self.connections.discard(connection)

    def answer(self, request: _Request) -> Coroutine[Any, Any, bytes]:
        def render(decision: Decision) -> bytes:
            return self.encoder.encode(decision, head=request.head, close=request.close)

        return self.pipeline.answer(
            lambda: self.builder.build(request.method, request.target, request.headers),
            render, self._fallbacks[request.head, request.close], time.perf_counter())

    def refused_request(self, decision: Decision) -> None:
        log.warning("check request refused (%d): %s", decision.status, decision.description)
        self.pipeline.record(decision, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = self.loop.time()
            for connection in list(self.connections):
                connection.sweep(now)

    async def stop(self, grace: float) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer, all
        within ``grace`` seconds."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.drain()
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close()  # past the grace: closed regardless
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
