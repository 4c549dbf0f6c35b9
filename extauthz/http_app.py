"""The HTTP sides of a worker, and the limits that keep slow clients off the Check port.

- public (``http.listen``, 9002; what Envoy routes to): ``/healthz``, a bare ``/readyz``
  status for probes, the step-up pages, the demo issuer's discovery, JWKS and login;
- admin (``admin.listen``, default 127.0.0.1:9004): ``/metrics``, ``/readyz`` with its
  details (why not ready, stale or refused data, unsafe settings), ``/healthz``.

Both share the worker's event loop and file descriptors with gRPC Check, so a client that
opens connections and sends nothing, or half a request, must not hold them: a connection
has ``http.header_timeout`` to deliver a request's headers (when it opens, and after each
response), then as long again for the body; each listener holds at most its connection cap
and answers any connection past it with a 503 and closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from extauthz.config import Settings
from extauthz.errors import ConfigError
from extauthz.identity.demo_issuer import DemoIssuer

log = logging.getLogger("extauthz.http")

ReadyCheck = Callable[[], tuple[bool, str]]
Routes = Callable[[web.Application], None]

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
         b"connection: close\r\ncontent-length: 18\r\n\r\ntoo many requests\n")


def http_app(*, ready: ReadyCheck, demo: DemoIssuer | None, settings: Settings,
             routes: Sequence[Routes] = ()) -> web.Application:
    """The public side: what Envoy routes to (``routes``: the step-up pages), and what
    probes ask (readiness without its reasons: those are on the admin listener only)."""
    app = _app(ready=ready, settings=settings, routes=routes, max_body=64 * 1024, details=False)
    if demo is not None:
        discovery, jwks = demo.discovery, demo.jwks

        async def openid_configuration(_: web.Request) -> web.Response:
            return web.json_response(discovery)

        async def jwks_json(_: web.Request) -> web.Response:
            return web.json_response(jwks, headers={"cache-control": "public, max-age=300"})

        app.router.add_get("/.well-known/openid-configuration", openid_configuration)
        app.router.add_get("/.well-known/jwks.json", jwks_json)
        if settings.token.cookie:
            app.router.add_get("/.extauthz/demo/login", _demo_login(demo, settings.token.cookie))
    return app


def admin_app(*, ready: ReadyCheck, settings: Settings,
              routes: Sequence[Routes] = ()) -> web.Application:
    """The admin side: metrics (``routes``) and readiness with its reasons, for operators
    and scrapers."""
    return _app(ready=ready, settings=settings, routes=routes, max_body=4 * 1024, details=True)


def _app(*, ready: ReadyCheck, settings: Settings, routes: Sequence[Routes], max_body: int,
         details: bool) -> web.Application:
    """An app with ``routes``, ``/healthz`` and ``/readyz`` (with its reasons if ``details``),
    whose bodies are read within the header timeout."""
    app = web.Application(client_max_size=max_body,
                          middlewares=[_body_deadline(settings.http_header_timeout)])
    for add in routes:
        add(app)

    async def readyz(_: web.Request) -> web.Response:
        ok, why = ready()
        text = why if details else ("ready" if ok else "not ready")
        return web.Response(text=text + "\n", status=200 if ok else 503,
                            headers={"cache-control": "no-store"})

    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _body_deadline(timeout: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Read a request's body within ``timeout`` before its handler runs (aiohttp has no
    body timeout: a client that sends half a body would hold the connection forever)."""
    @web.middleware
    async def deadline(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout):
                    await request.read()  # kept: the handler's read()/json() reuse it
            except TimeoutError:
                raise web.HTTPRequestTimeout(text="request body too slow\n",
                                             headers={"connection": "close"}) from None
        return await handler(request)
    return deadline


@dataclass(frozen=True, kw_only=True)
class Listener:
    """Where one HTTP side listens, and its limits."""

    name: str  # "HTTP" or "admin HTTP", for messages
    key: str  # the config key of the address, for the fix in an error
    host: str
    port: int
    header_timeout: float
    max_connections: int


class _Busy(asyncio.Protocol):
    """A connection past the cap: a 503 and closed, before any request is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)  # uvloop's is not a subclass
        writer.write(_BUSY)
        writer.close()


class CappedSite(web.TCPSite):
    """A TCP site that holds at most ``max_connections`` connections.

    Counted where the descriptor is taken (the protocol factory), including connections
    accepted in the same batch whose handlers have not registered yet.
    """

    def __init__(self, runner: web.AppRunner, listener: Listener, reuse_port: bool) -> None:
        super().__init__(runner, listener.host, listener.port, reuse_port=reuse_port or None)
        self.listener = listener
        self.refused = 0
        self._fresh: list[tuple[float, RequestHandler]] = []
        self._warned = 0.0

    @property
    def open_connections(self) -> int:
        server = self._runner.server
        return len(server.connections) if server is not None else 0

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        live = set(server.connections)
        self._fresh = [(t, h) for t, h in self._fresh if now - t < 1.0 and h not in live]
        if len(live) + len(self._fresh) >= self.listener.max_connections:
            self.refused += 1
            if now - self._warned >= 10.0:
                self._warned = now
                log.warning("%s on %s:%d: %d connections open, the most it takes (%s); new ones "
                            "get 503 until some close", self.listener.name, self.listener.host,
                            self.listener.port, len(live) + len(self._fresh),
                            "http.max_connections" if self.listener.key == "http.listen"
                            else "the admin cap")
            return _Busy()
        handler = server()
        self._fresh.append((now, handler))
        return handler

    async def start(self) -> None:
        # TCPSite.start with our protocol factory in place of the runner's server.
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)


async def start_site(app: web.Application, listener: Listener, *, reuse_port: bool,
                     shutdown_timeout: float) -> tuple[web.AppRunner, CappedSite]:
    """Serve ``app`` on ``listener``; a taken or foreign address is a ConfigError."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=shutdown_timeout,
                           # from the connection's start and after each response: the time
                           # to send the next request's headers (aiohttp closes the
                           # connection if they have not all arrived by then)
                           keepalive_timeout=listener.header_timeout,
                           # an unread or half-sent body is not waited for after the answer
                           lingering_time=0)
    await runner.setup()
    site = CappedSite(runner, listener, reuse_port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        env = "EXTAUTHZ_" + listener.key.replace(".", "_").upper()
        raise ConfigError(f"cannot listen for {listener.name} on {listener.host}:{listener.port}: "
                          f"{e.strerror}; set {listener.key} ({env})") from e
    return runner, site


def _demo_login(demo: DemoIssuer, cookie: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Demo only: sign in as anyone (?sub=alice&groups=sre) by getting a demo token cookie."""
    from extauthz.stepup.http import safe_rd

    async def login(request: web.Request) -> web.Response:
        q = request.query
        sub = q.get("sub", "alice")
        groups = tuple(g for g in q.get("groups", "sre").split(",") if g)
        token = demo.mint(subject=sub, email=q.get("email") or f"{sub}@example.com", groups=groups,
                          scopes=tuple(q.get("scope", "").split()))
        response = web.Response(status=302, headers={"location": safe_rd(q.get("rd")),
                                                      "cache-control": "no-store"})
        response.set_cookie(cookie, token, path="/", httponly=True, samesite="Lax", max_age=3600)
        return response
    return login
