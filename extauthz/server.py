"""One worker process: the gRPC Check service and the HTTP sides on one event loop, around
the engine (``engine.py``) that decides.

This module is the lifecycle only. Start: refuse an unsafe Redis when asked to, build the
engine, load what must be there before serving, bind HTTP, start the background loops,
wait (a bounded time) until warm, then bind the Check port and report SERVING once the
engine is ready. SIGTERM/SIGINT: report NOT_SERVING (gRPC health and /readyz), let
in-flight checks finish within ``shutdown_grace``, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from extauthz.check_http.protocol import CheckHttpListener, Limits
from extauthz.check_http.view import RequestViewBuilder
from extauthz.config import Settings, insecure_settings
from extauthz.engine import Engine, build_engine
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.http_app import CappedSite, Listener, admin_app, http_app, start_site
from extauthz.identity.demo_issuer import demo_issuer
from extauthz.nats.callout import Callout
from extauthz.pipeline import CheckPipeline
from extauthz.rlimits import http_connection_budget, raise_open_file_limit
from extauthz.service import SERVICE_NAME as AUTH_SERVICE
from extauthz.service import AuthorizationService
from extauthz.stepup.http import StepupHttp
from extauthz.store.redis_client import is_redis_url, redis_client
from extauthz.store.redis_hash import redacted_url
from extauthz.store.redis_safety import check_redis
from extauthz.telemetry import tracing

log = logging.getLogger("extauthz.server")


@dataclass
class Worker:
    """The lifecycle's own state: whether the ports take checks, and the background tasks."""

    engine: Engine
    serving: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    nats: Callout | None = None  # the NATS auth callout, when nats.url is set

    def ready(self) -> tuple[bool, str]:
        """/readyz and gRPC health: serving, and the engine can decide."""
        if not self.serving:
            return False, "not serving"
        if self.nats is not None:  # not ready while the callout is not connected
            return self.nats.readiness(*self.engine.status())
        return self.engine.status()


async def _remind_unsafe(messages: tuple[str, ...], every: float = 60.0) -> None:
    """An unsafe setting (the demo issuer, keys over plain http) is logged at ERROR at start
    and every minute after, so it is never on unnoticed."""
    while True:
        for message in messages:
            log.error("UNSAFE: %s", message)
        await asyncio.sleep(every)


async def _require_safe_redis(settings: Settings) -> None:
    """``store.require_safe_redis``: refuse to start on a Redis that can lose the state. An
    unreachable Redis is checked later (the worker is not ready until it passes)."""
    s = settings.store
    if not (s.require_safe_redis and s.url and is_redis_url(s.url)):
        return
    client = redis_client(s.url, s.timeout)
    try:
        safety = await check_redis(client, f"redis {redacted_url(s.url)}")
    except StoreUnavailable:
        return
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    if not safety.safe:
        raise ConfigError(f"store.require_safe_redis: {safety.detail}; fix Redis, or set "
                          "store.require_safe_redis: false to run with a warning")


def grpc_server_options(reuse_port: bool) -> list[tuple[str, int]]:
    """The Check server's grpcio options (the benchmark's floor server uses the same)."""
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ]


def _address(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _start_grpc(
    engine: Engine, reuse_port: bool
) -> tuple[list[grpc.aio.Server], health_aio.HealthServicer]:
    """The Check server (Check and health), then the admin one (reflection and health) when
    admin.grpc_listen is set: who can reach the Check port does not get reflection."""
    server = grpc.aio.server(options=grpc_server_options(reuse_port))
    AuthorizationService(authorizer=engine.authorizer, audit=engine.audit,
                         metrics=engine.metrics).add_to_server(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = _address(engine.settings.grpc_listen)
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen for gRPC on {address}: the port is taken or the "
                          "address is not local; set grpc.listen (EXTAUTHZ_GRPC_LISTEN)") from e
    await server.start()
    for name in ("", AUTH_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    servers = [server]
    if engine.settings.admin_grpc_listen is not None:
        try:
            servers.append(await _start_admin_grpc(engine.settings.admin_grpc_listen, health,
                                                   reuse_port))
        except BaseException:
            await server.stop(None)
            raise
    return servers, health


async def _start_admin_grpc(listen: tuple[str, int], health: health_aio.HealthServicer,
                            reuse_port: bool) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if reuse_port else 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [AUTH_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    address = _address(listen)
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen for admin gRPC on {address}: the port is taken or the "
                          "address is not local; set admin.grpc_listen "
                          "(EXTAUTHZ_ADMIN_GRPC_LISTEN)") from e
    await server.start()
    return server


async def _start_check_http(engine: Engine, reuse_port: bool) -> CheckHttpListener | None:
    """Check over plain HTTP (check_http.listen), on this event loop, unless it is null."""
    s = engine.settings
    if s.check_http_listen is None:
        return None
    c = s.check_http
    listener = CheckHttpListener(
        pipeline=CheckPipeline(authorizer=engine.authorizer, audit=engine.audit,
                               metrics=engine.metrics),
        builder=RequestViewBuilder(path_prefix=c.path_prefix, route_header=c.route_header),
        limits=Limits(max_header_bytes=c.max_header_bytes, max_headers=c.max_headers,
                      header_timeout=c.header_timeout, idle_timeout=c.idle_timeout,
                      max_connections=http_connection_budget(
                          c.max_connections, raise_open_file_limit(), "check_http.max_connections")),
        loop=asyncio.get_running_loop(), spoofable=engine.authorizer.spoofable_headers)
    host, port = s.check_http_listen
    try:
        await listener.start(host, port, reuse_port=reuse_port)
    except OSError as e:
        raise ConfigError(f"cannot listen for HTTP checks on {_address(s.check_http_listen)}: "
                          f"{e.strerror or e}; set check_http.listen (EXTAUTHZ_CHECK_HTTP_LISTEN) "
                          "or null to turn it off") from e
    index = engine.policies.index
    bound = sorted(p.id for p in index.by_id.values() if p.bound_only) if index is not None else []
    if c.route_header is None and bound:
        log.warning("bound_only policies %s never apply to checks over plain HTTP: set "
                    "check_http.route_header and have the gateway set it per route (README: "
                    "gRPC or HTTP?)", ", ".join(bound))
    engine.metrics.observe(
        "extauthz.check_http.connections", "Open plain-HTTP Check connections",
        lambda: [(len(listener.connections), {})], counter=False)
    engine.metrics.observe(
        "extauthz.check_http.refused", "Plain-HTTP Check connections closed at max_connections",
        lambda: [(listener.refused, {})], counter=True)
    return listener


ADMIN_MAX_CONNECTIONS = 64  # scrapers and operators: a few at a time


def _metrics_route(engine: Engine) -> Callable[[web.Application], None]:
    async def metrics(_: web.Request) -> web.Response:
        text = await asyncio.to_thread(engine.shared_metrics.text)
        return web.Response(text=text, content_type="text/plain",
                            headers={"cache-control": "no-store"}, charset="utf-8")

    def add(app: web.Application) -> None:
        app.router.add_get("/metrics", metrics)
    return add


async def _start_http(worker: Worker, reuse_port: bool) -> list[web.AppRunner]:
    """The public HTTP side, and the admin one unless admin.listen is null; each with the
    header timeout and a connection cap that leaves the Check port its descriptors."""
    engine = worker.engine
    s = engine.settings
    demo = demo_issuer(s.demo_issuer) if s.demo_issuer.enabled else None
    open_files = raise_open_file_limit()
    cap = http_connection_budget(s.http_max_connections, open_files, "http.max_connections")
    apps = [(http_app(ready=worker.ready, demo=demo, settings=s,
                      routes=[StepupHttp(engine=engine).add_routes]),
             Listener(name="HTTP", key="http.listen", host=s.http_listen[0],
                      port=s.http_listen[1], header_timeout=s.http_header_timeout,
                      max_connections=cap))]
    if s.admin_listen is not None:
        apps.append((admin_app(ready=worker.ready, settings=s, routes=[_metrics_route(engine)]),
                     Listener(name="admin HTTP", key="admin.listen", host=s.admin_listen[0],
                              port=s.admin_listen[1], header_timeout=s.http_header_timeout,
                              max_connections=min(ADMIN_MAX_CONNECTIONS, cap))))
    runners: list[web.AppRunner] = []
    sites: list[CappedSite] = []
    try:
        for app, listener in apps:
            runner, site = await start_site(app, listener, reuse_port=reuse_port,
                                            shutdown_timeout=s.shutdown_grace)
            runners.append(runner)
            sites.append(site)
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    engine.metrics.observe(
        "extauthz.http.connections", "Open HTTP connections, by listener",
        lambda: [(site.open_connections, {"listener": site.listener.key}) for site in sites],
        counter=False)
    engine.metrics.observe(
        "extauthz.http.refused", "HTTP connections answered 503 and closed at the cap",
        lambda: [(site.refused, {"listener": site.listener.key}) for site in sites],
        counter=True)
    return runners


async def _wait_warm(engine: Engine, limit: float) -> None:
    """Wait (at most ``limit`` seconds) for policies and every issuer's keys; past that the
    port opens anyway, so an unreachable Redis or IdP yields 503 denials, not silence."""
    deadline = asyncio.get_running_loop().time() + limit
    while asyncio.get_running_loop().time() < deadline:
        if engine.cold() is None:
            return
        await asyncio.sleep(0.02)
    log.warning("starting cold after %.0fs: %s", limit, engine.cold())


async def _report_ready(worker: Worker, health: health_aio.HealthServicer) -> None:
    while not worker.ready()[0]:
        await asyncio.sleep(0.05)
    for name in ("", AUTH_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("ready")


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    on_started: Callable[[Engine], Awaitable[None]] | None = None,
) -> None:
    """Run one worker until ``stop`` is set or SIGTERM/SIGINT arrives."""
    tracing.configure()  # only when the OTEL_* variables ask for it
    await _require_safe_redis(settings)
    engine = build_engine(settings)
    worker = Worker(engine)
    try:
        await engine.prime()
    except BaseException:
        await engine.close()
        raise
    if stop is None:  # a real process: the signals stop it (tests pass their own event)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
    # HTTP first (the demo issuer's JWKS is served there), then keys and policies, and the
    # Check port last: a worker that (re)starts takes no checks while it is still cold.
    try:
        runners = await _start_http(worker, reuse_port)
    except BaseException:
        await engine.close()
        raise
    worker.tasks = [asyncio.create_task(work, name=name) for name, work in engine.loops().items()]
    if insecure_settings(settings):
        worker.tasks.append(asyncio.create_task(_remind_unsafe(insecure_settings(settings)),
                                                name="unsafe"))
    await _wait_warm(engine, settings.jwks.fetch_timeout + settings.store.timeout + 1)
    # What start built (modules, the policy index, key sets) lives as long as the worker: out
    # of the cyclic collector's sight, every collection is cheaper (benchmarks/NOTES.md).
    gc.freeze()
    try:
        servers, health = await _start_grpc(engine, reuse_port)
    except BaseException:
        await _stop(worker, runners)
        raise
    try:
        check_http = await _start_check_http(engine, reuse_port)
    except BaseException:
        await asyncio.gather(*(server.stop(None) for server in servers))
        await _stop(worker, runners)
        raise
    if settings.nats.enabled:  # every worker joins the callout's queue group
        worker.nats = Callout(engine)
        worker.tasks.append(asyncio.create_task(worker.nats.run(), name="nats-callout"))
    worker.serving = True
    worker.tasks.append(asyncio.create_task(_report_ready(worker, health), name="ready"))
    log.info("serving Check over gRPC on %s:%d and over HTTP on %s; pages on %s:%d; "
             "admin HTTP on %s, admin gRPC on %s", *settings.grpc_listen,
             _address(settings.check_http_listen) if settings.check_http_listen else "(off)",
             *settings.http_listen,
             _address(settings.admin_listen) if settings.admin_listen else "(off)",
             _address(settings.admin_grpc_listen) if settings.admin_grpc_listen else "(off)")
    if on_started is not None:
        await on_started(engine)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining for up to %.0fs", settings.shutdown_grace)
        worker.serving = False
        await health.enter_graceful_shutdown()
        await asyncio.gather(*(server.stop(settings.shutdown_grace) for server in servers),
                             *([check_http.stop(settings.shutdown_grace)] if check_http else []))
        await _stop(worker, runners)
        log.info("stopped")


async def _stop(worker: Worker, runners: list[web.AppRunner]) -> None:
    """After the Check servers stopped: the background tasks, the HTTP sides, the engine."""
    for task in worker.tasks:
        task.cancel()
    await asyncio.gather(*worker.tasks, return_exceptions=True)
    for runner in runners:
        await runner.cleanup()
    await worker.engine.close()
