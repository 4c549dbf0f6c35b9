"""One worker process: the gRPC Check service and the HTTP side on one event loop.

Start: bind both ports, start the JWKS refresh loops, report SERVING once every
issuer's keys are loaded. SIGTERM/SIGINT: report NOT_SERVING (gRPC health and
/readyz), let in-flight checks finish within ``shutdown_grace``, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from extauthz.audit import AuditLog
from extauthz.authorize import Authorizer, StepupKeys
from extauthz.clock import SYSTEM_CLOCK, Clock
from extauthz.config import Settings, insecure_settings
from extauthz.demo.issuer import DemoIssuer, demo_issuer
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.follow import adopt_floor, follow_file, follow_redis
from extauthz.http_app import CappedSite, Listener, admin_app, http_app, start_site
from extauthz.identity.jwks import HttpFetcher, IssuerKeys
from extauthz.identity.model import Identity
from extauthz.identity.verify import TokenVerifier
from extauthz.policy.match import PolicyIndex
from extauthz.policy.store import FilePolicyStore, PolicyStore, RedisPolicyStore, open_store
from extauthz.policy.sync import PolicySnapshot
from extauthz.policy.sync import followed as followed_policies
from extauthz.redis_hash import redacted_url
from extauthz.redis_safety import PROBLEMS, RedisSafety, check_redis
from extauthz.revocation.store import (
    FileRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    open_revocation_store,
)
from extauthz.revocation.sync import RevocationSnapshot
from extauthz.revocation.sync import followed as followed_revocations
from extauthz.rlimits import http_connection_budget, raise_open_file_limit
from extauthz.service import SERVICE_NAME as AUTH_SERVICE
from extauthz.service import AuthorizationService
from extauthz.stepup.ceremonies import Ceremonies
from extauthz.stepup.cookie import StepupCookies, load_signing_key, new_signing_key_pem
from extauthz.stepup.http import StepupHttp
from extauthz.stepup.store import StepupStore, open_stepup_store
from extauthz.store_floor import Floor, floor_path, store_id
from extauthz.telemetry import tracing
from extauthz.telemetry.metrics import Metrics, SharedMetrics

log = logging.getLogger("extauthz.server")


@dataclass
class Runtime:
    """Everything one process needs to answer checks, wired once at start."""

    settings: Settings
    fetcher: HttpFetcher
    issuer_keys: dict[str, IssuerKeys]
    verifier: TokenVerifier
    authorizer: Authorizer
    policies: PolicySnapshot
    store: PolicyStore | None
    revocations: RevocationSnapshot
    revocation_store: RevocationStore
    audit: AuditLog
    metrics: Metrics
    shared_metrics: SharedMetrics
    stepup_store: StepupStore
    stepup: StepupKeys
    ceremonies: Ceremonies
    clock: Clock
    demo: DemoIssuer | None
    serving: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    floor: Floor | None = None  # Redis: each worker's last good snapshot, on local disk
    redis_safety: RedisSafety | None = None  # the last check of Redis' settings
    audit_redis: Any = None  # audit.redis_url: the stream's own Redis client

    def cold(self) -> str | None:
        """What is still missing before checks can be answered, or None."""
        if not self.policies.ready:
            return f"no policies loaded yet ({self.policies.note or 'connecting'})"
        if not self.revocations.ready:
            return f"no revocations loaded yet ({self.revocations.note or 'connecting'})"
        if self.settings.store.require_safe_redis and isinstance(self.store, RedisPolicyStore):
            safety = self.redis_safety
            if safety is None or not safety.safe:
                return ("store.require_safe_redis: " + (safety.detail if safety else
                                                        "Redis' settings not checked yet"))
        missing = [k.issuer.issuer for k in self.issuer_keys.values() if not k.loaded]
        if missing:
            return "no signing keys yet for: " + ", ".join(missing)
        if self.stepup.cookies is None:
            return "the step-up cookie key is not loaded yet"
        return None

    def mint_stepup_cookie(self, identity: Identity, credential_id: str) -> str | None:
        cookies = self.stepup.cookies
        return cookies.mint(identity, credential_id) if cookies is not None else None

    def stepped_up_at(self, cookie: str | None, identity: Identity) -> int | None:
        """When this user last confirmed with a passkey, per a valid step-up cookie."""
        cookies = self.stepup.cookies
        proof = cookies.verify(cookie, identity) if cookies is not None and cookie else None
        if proof is None:
            return None
        revoked = self.revocations.current
        if revoked is not None and revoked.stepup_revoked(identity.issuer, identity.subject,
                                                          proof.auth_time):
            return None
        return proof.auth_time

    def ready(self) -> tuple[bool, str]:
        if not self.serving:
            return False, "not serving"
        missing = self.cold()
        if missing:
            return False, missing
        status = f"ready: policies revision {self.policies.revision}"
        stale = self.policies.staleness()
        if self.policies.error and stale is not None:
            status += f", stale for {stale:.0f}s ({self.policies.error})"
        for snap in (self.policies, self.revocations):
            if snap.refused is not None:
                status += f"; {snap.what}: {snap.note}"
        if self.redis_safety is not None and not self.redis_safety.safe:
            status += f"; UNSAFE REDIS: {self.redis_safety.detail}"
        for unsafe in insecure_settings(self.settings):  # ready, but never silently so
            status += f"; UNSAFE: {unsafe}"
        return True, status


def build_runtime(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> Runtime:
    s = settings.store
    stepup_store = open_stepup_store(s.url, s.prefix, s.timeout, s.state_file, clock)
    revocation_store = open_revocation_store(s.url, s.prefix, s.timeout, stepup_store, clock)
    revocations = RevocationSnapshot(clock)
    fetcher = HttpFetcher(settings.jwks.fetch_timeout)
    keys = {i.issuer: IssuerKeys(i, settings.jwks, fetcher, clock) for i in settings.issuers}
    verifier = TokenVerifier(settings, keys, clock, revocations)
    demo = demo_issuer(settings.demo_issuer) if settings.demo_issuer.enabled else None
    policies = PolicySnapshot(clock)
    store = open_store(s.url, s.prefix, s.timeout)
    if store is None:
        policies.index = PolicyIndex([], "none")  # no store: the default action decides
    stepup = StepupKeys()
    key_file = settings.stepup.signing_key_file
    if key_file is not None:
        try:
            key = load_signing_key(Path(key_file).read_bytes(), key_file)
        except (OSError, ValueError) as e:
            raise ConfigError(f"config: 'stepup.signing_key_file': {e}") from e
        stepup.cookies = StepupCookies(key, settings.stepup.max_age_limit, clock)
    metrics = Metrics(worker=os.environ.get("EXTAUTHZ_WORKER_ID", "0"))
    a = settings.audit
    audit_redis: Any = None
    if a.redis_stream and a.redis_url:  # its own Redis: the stream cannot crowd out the state
        audit_redis = aioredis.from_url(a.redis_url, socket_timeout=s.timeout,
                                        socket_connect_timeout=s.timeout, decode_responses=True)
    elif a.redis_stream and isinstance(store, RedisPolicyStore):
        log.warning("audit: the stream shares Redis with the policies and revocations, capped at "
                    "about %d records (audit.stream_maxlen); size maxmemory for it, or give it its "
                    "own instance with audit.redis_url", a.stream_maxlen)
        audit_redis = store.client
    audit = AuditLog(clock, stdout=a.stdout, flush_interval=a.flush_interval,
                     redis=audit_redis, stream=s.prefix + "audit", maxlen=a.stream_maxlen)
    runtime = Runtime(settings=settings, fetcher=fetcher, issuer_keys=keys, verifier=verifier,
                   audit=audit, metrics=metrics,
                   shared_metrics=SharedMetrics(metrics, os.environ.get("EXTAUTHZ_METRICS_DIR")),
                   authorizer=Authorizer(settings, verifier, policies, stepup, clock, revocations,
                                         lambda pid: metrics.dry_run.add(1, {"policy": pid})),
                   policies=policies, store=store, revocations=revocations,
                   revocation_store=revocation_store, stepup_store=stepup_store, stepup=stepup,
                   ceremonies=Ceremonies(settings.stepup, stepup_store, clock), clock=clock,
                   demo=demo)
    if a.redis_url and audit_redis is not None:
        runtime.audit_redis = audit_redis
    if isinstance(store, RedisPolicyStore) and s.url:
        runtime.floor = Floor(floor_path(s), store_id(s.url, s.prefix))
    _observe(runtime)
    return runtime


def _observe(rt: Runtime) -> None:
    """Read at scrape time: the per-request path pays nothing for these."""
    m = rt.metrics
    m.observe("extauthz.token_cache.lookups", "Verified-token cache lookups by result",
              lambda: [(rt.verifier.cache_hits, {"result": "hit"}),
                       (rt.verifier.cache_misses, {"result": "miss"})], counter=True)
    m.observe("extauthz.jwks.fetches", "JWKS and discovery fetches per issuer by result",
              lambda: [v for k in rt.issuer_keys.values() for v in (
                  (k.fetches - k.failures, {"issuer": k.issuer.issuer, "result": "ok"}),
                  (k.failures, {"issuer": k.issuer.issuer, "result": "error"}))], counter=True)
    m.observe("extauthz.store.errors", "Failed loads from the store (Redis or files)",
              lambda: [(rt.policies.errors, {"data": "policies"}),
                       (rt.revocations.errors, {"data": "revocations"})], counter=True)
    m.observe("extauthz.policy.snapshot.age", "Seconds since the store last confirmed the "
              "policies (grows while Redis is unreachable)",
              lambda: [(rt.policies.staleness() or 0.0, {})], counter=False, unit="s")
    m.observe("extauthz.policy.snapshot.revision", "Policy revision in force (value 1)",
              lambda: [(1, {"revision": rt.policies.revision or "none"})], counter=False)
    m.observe("extauthz.demo_issuer.enabled", "1 while the demo issuer (anyone signs in as "
              "anyone) is on; alert on it", lambda: [(int(rt.demo is not None), {})], counter=False)
    m.observe("extauthz.policies", "Policies in force",
              lambda: [(len(rt.policies.index) if rt.policies.index else 0, {})], counter=False)
    m.observe("extauthz.revocations", "Revocations in force",
              lambda: [(len(rt.revocations.current) if rt.revocations.current else 0, {})],
              counter=False)
    m.observe("extauthz.store.loads", "Full reads of the records from the store (each parses "
              "and compiles; an event whose revision is unchanged costs none)",
              lambda: [(rt.policies.loads, {"data": "policies"}),
                       (rt.revocations.loads, {"data": "revocations"})], counter=True)
    m.observe("extauthz.store.refused", "1 while the worker refuses the store's data for the "
              "named condition (epoch_lost, revision_backwards, records_lost, epoch_replaced, "
              "restore_pending) and keeps its snapshot; restore with `extauthz store reseed`",
              lambda: [(1, {"data": snap.what, "condition": snap.refused})
                       for snap in (rt.policies, rt.revocations) if snap.refused is not None],
              counter=False)
    m.observe("extauthz.store.redis_unsafe", "1 for each way Redis' settings can lose the state "
              "(eviction, no_persistence) or could not be checked (unchecked)",
              lambda: [] if rt.redis_safety is None else [
                  (1 if p in rt.redis_safety.problems else 0, {"problem": p}) for p in PROBLEMS],
              counter=False)


async def _remind_unsafe(messages: tuple[str, ...], every: float = 60.0) -> None:
    """An unsafe setting (the demo issuer, keys over plain http) is logged at ERROR at start
    and every minute after, so it is never on unnoticed."""
    while True:
        for message in messages:
            log.error("UNSAFE: %s", message)
        await asyncio.sleep(every)


async def _write_metrics(runtime: Runtime) -> None:
    while True:
        await asyncio.to_thread(runtime.shared_metrics.write)
        await asyncio.sleep(1.0)


async def _load_stepup_key(runtime: Runtime) -> None:
    """No key file: use the key kept in the store (created once, shared by every replica)."""
    delay = 0.2
    while runtime.stepup.cookies is None:
        try:
            pem = await runtime.stepup_store.signing_key(new_signing_key_pem)
            key = load_signing_key(pem, runtime.stepup_store.description)
            runtime.stepup.cookies = StepupCookies(key, runtime.settings.stepup.max_age_limit,
                                                   runtime.clock)
        except StoreUnavailable as e:
            log.warning("stepup: cannot load the cookie key (%s); retrying", e.message)
        except ValueError as e:
            log.error("stepup: the stored cookie key is unusable (%s); step-up cannot be met "
                      "until it is replaced (set stepup.signing_key_file)", e)
        else:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def _start_sync(runtime: Runtime) -> list[asyncio.Task[None]]:
    """Files are read before serving (a broken policy file stops the start); Redis is
    followed in the background (policies and revocations on one subscription) and the
    worker is not ready until both loaded once."""
    store, revs, interval = runtime.store, runtime.revocation_store, runtime.settings.store.poll_interval
    if isinstance(store, RedisPolicyStore):
        assert isinstance(revs, RedisRevocationStore)
        floor = runtime.floor
        watched = [followed_policies(store, runtime.policies, floor),
                   followed_revocations(revs, runtime.revocations, floor)]
        sections = await asyncio.to_thread(floor.read) if floor is not None else {}
        for f in watched:
            if f.kind in sections:  # serve the last good snapshot until the store confirms it
                adopt_floor(f, sections[f.kind])
        return [asyncio.create_task(follow_redis(store.client, store.channel, watched, interval),
                                    name="redis-sync"),
                asyncio.create_task(_watch_redis(runtime, store), name="redis-safety")]
    assert isinstance(revs, FileRevocationStore)
    runtime.revocations.install(await revs.load())
    tasks = [asyncio.create_task(follow_file(revs.signature, followed_revocations(
        revs, runtime.revocations), interval), name="revocations")]
    if isinstance(store, FilePolicyStore):
        if not store.path.exists():
            raise ConfigError(f"config: 'store.url' names {store.path}, which does not exist; "
                              "create it (`extauthz policy apply` does) or fix the path "
                              "(relative paths start at the working directory)")
        runtime.policies.install(await store.load())
        tasks.append(asyncio.create_task(follow_file(
            store.signature, followed_policies(store, runtime.policies), interval), name="policies"))
    return tasks


async def _watch_redis(runtime: Runtime, store: RedisPolicyStore) -> None:
    """At start and every ``store.safety_check_interval``: is Redis fit to hold the state?
    Unsafe settings are an ERROR every time they are seen (and a metric, and /readyz)."""
    interval = runtime.settings.store.safety_check_interval
    while True:
        try:
            safety = await check_redis(store.client, store.description)
        except StoreUnavailable:
            pass  # the sync loop says so; check again later
        else:
            if not safety.safe:
                log.error("store: Redis can lose the policies and revocations: %s (see the "
                          "README, Redis)", safety.detail)
            elif runtime.redis_safety is None or not runtime.redis_safety.safe:
                log.info("store: %s", safety.detail)
            runtime.redis_safety = safety
        await asyncio.sleep(interval)


async def _require_safe_redis(settings: Settings) -> None:
    """``store.require_safe_redis``: refuse to start on a Redis that can lose the state. An
    unreachable Redis is checked later (the worker is not ready until it passes)."""
    s = settings.store
    if not (s.require_safe_redis and s.url and s.url.startswith(("redis://", "rediss://", "unix://"))):
        return
    client = aioredis.from_url(s.url, socket_timeout=s.timeout, socket_connect_timeout=s.timeout,
                               decode_responses=True)
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
    runtime: Runtime, reuse_port: bool
) -> tuple[list[grpc.aio.Server], health_aio.HealthServicer]:
    """The Check server (Check and health), then the admin one (reflection and health) when
    admin.grpc_listen is set: who can reach the Check port does not get reflection."""
    server = grpc.aio.server(options=grpc_server_options(reuse_port))
    AuthorizationService(runtime.authorizer, runtime.audit, runtime.metrics).add_to_server(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = _address(runtime.settings.grpc_listen)
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen for gRPC on {address}: the port is taken or the "
                          "address is not local; set grpc.listen (EXTAUTHZ_GRPC_LISTEN)") from e
    await server.start()
    for name in ("", AUTH_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    servers = [server]
    if runtime.settings.admin_grpc_listen is not None:
        try:
            servers.append(await _start_admin_grpc(runtime.settings.admin_grpc_listen, health,
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


ADMIN_MAX_CONNECTIONS = 64  # scrapers and operators: a few at a time


def _metrics_route(runtime: Runtime) -> Callable[[web.Application], None]:
    async def metrics(_: web.Request) -> web.Response:
        text = await asyncio.to_thread(runtime.shared_metrics.text)
        return web.Response(text=text, content_type="text/plain",
                            headers={"cache-control": "no-store"}, charset="utf-8")

    def add(app: web.Application) -> None:
        app.router.add_get("/metrics", metrics)
    return add


async def _start_http(runtime: Runtime, reuse_port: bool) -> list[web.AppRunner]:
    """The public HTTP side, and the admin one unless admin.listen is null; each with the
    header timeout and a connection cap that leaves the Check port its descriptors."""
    stepup = StepupHttp(runtime.settings, runtime.verifier, runtime.ceremonies,
                        runtime.stepup_store, runtime.mint_stepup_cookie, runtime.stepped_up_at,
                        lambda ceremony, outcome: runtime.metrics.stepup.add(
                            1, {"ceremony": ceremony, "outcome": outcome}),
                        revocations=runtime.revocation_store)
    s = runtime.settings
    open_files = raise_open_file_limit()
    cap = http_connection_budget(s.http_max_connections, open_files, "http.max_connections")
    apps = [(http_app(runtime.ready, runtime.demo, s, extra=[stepup.add_routes]),
             Listener("HTTP", "http.listen", *s.http_listen, s.http_header_timeout, cap))]
    if s.admin_listen is not None:
        apps.append((admin_app(runtime.ready, s, extra=[_metrics_route(runtime)]),
                     Listener("admin HTTP", "admin.listen", *s.admin_listen,
                              s.http_header_timeout, min(ADMIN_MAX_CONNECTIONS, cap))))
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
    runtime.metrics.observe(
        "extauthz.http.connections", "Open HTTP connections, by listener",
        lambda: [(site.open_connections, {"listener": site.listener.key}) for site in sites],
        counter=False)
    runtime.metrics.observe(
        "extauthz.http.refused", "HTTP connections answered 503 and closed at the cap",
        lambda: [(site.refused, {"listener": site.listener.key}) for site in sites],
        counter=True)
    return runners


async def _wait_warm(runtime: Runtime, limit: float) -> None:
    """Wait (at most ``limit`` seconds) for policies and every issuer's keys; past that the
    port opens anyway, so an unreachable Redis or IdP yields 503 denials, not silence."""
    deadline = asyncio.get_running_loop().time() + limit
    while asyncio.get_running_loop().time() < deadline:
        if runtime.cold() is None:
            return
        await asyncio.sleep(0.02)
    log.warning("starting cold after %.0fs: %s", limit, runtime.cold())


async def _report_ready(runtime: Runtime, health: health_aio.HealthServicer) -> None:
    while not runtime.ready()[0]:
        await asyncio.sleep(0.05)
    for name in ("", AUTH_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("ready")


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    on_started: Callable[[Runtime], Awaitable[None]] | None = None,
) -> None:
    """Run one worker until ``stop`` is set or SIGTERM/SIGINT arrives."""
    tracing.configure()  # only when the OTEL_* variables ask for it
    await _require_safe_redis(settings)
    runtime = build_runtime(settings)
    sync = await _start_sync(runtime)
    if stop is None:  # a real process: the signals stop it (tests pass their own event)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
    # HTTP first (the demo issuer's JWKS is served there), then keys and policies, and the
    # Check port last: a worker that (re)starts takes no checks while it is still cold.
    runners = await _start_http(runtime, reuse_port)
    runtime.tasks = [asyncio.create_task(k.run(), name=f"jwks:{k.issuer.issuer}")
                     for k in runtime.issuer_keys.values()]
    runtime.tasks += sync
    if insecure_settings(settings):
        runtime.tasks.append(asyncio.create_task(_remind_unsafe(insecure_settings(settings)),
                                                 name="unsafe"))
    if runtime.audit.enabled:
        runtime.tasks.append(asyncio.create_task(runtime.audit.run(), name="audit"))
    if runtime.shared_metrics.dir is not None:
        runtime.tasks.append(asyncio.create_task(_write_metrics(runtime), name="metrics"))
    if runtime.stepup.cookies is None:
        runtime.tasks.append(asyncio.create_task(_load_stepup_key(runtime), name="stepup-key"))
    await _wait_warm(runtime, settings.jwks.fetch_timeout + settings.store.timeout + 1)
    try:
        servers, health = await _start_grpc(runtime, reuse_port)
    except BaseException:
        for task in runtime.tasks:
            task.cancel()
        for runner in runners:
            await runner.cleanup()
        raise
    runtime.serving = True
    runtime.tasks.append(asyncio.create_task(_report_ready(runtime, health), name="ready"))
    log.info("serving gRPC on %s:%d and HTTP on %s:%d; admin HTTP on %s, admin gRPC on %s",
             *settings.grpc_listen, *settings.http_listen,
             _address(settings.admin_listen) if settings.admin_listen else "(off)",
             _address(settings.admin_grpc_listen) if settings.admin_grpc_listen else "(off)")
    if on_started is not None:
        await on_started(runtime)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining for up to %.0fs", settings.shutdown_grace)
        runtime.serving = False
        await health.enter_graceful_shutdown()
        await asyncio.gather(*(server.stop(settings.shutdown_grace) for server in servers))
        for task in runtime.tasks:
            task.cancel()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
        await runtime.fetcher.close()
        if runtime.store is not None:
            await runtime.store.close()
        await runtime.stepup_store.close()
        await runtime.revocation_store.close()
        if runtime.audit_redis is not None:
            with contextlib.suppress(Exception):
                await runtime.audit_redis.aclose()
        runtime.metrics.shutdown()
        log.info("stopped")
