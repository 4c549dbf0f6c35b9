"""The engine: what decides, built once per process (the composition root).

``build_engine(settings)`` makes the parts once: the issuers' key sets and the token
verifier, the policy and revocation snapshots with their stores, the step-up cookie gate,
the authorizer, the audit log and the metrics. Every way in asks this one engine, so they
cannot disagree: the gRPC Check adapter (``service.py``), the step-up pages
(``stepup/http.py``) and ``extauthz policy explain`` (``policy/cli.py``), which loads the
snapshots and the step-up key the way a starting worker does. ``server.py`` runs a worker's
lifecycle around it: start order, readiness, signals, drain.

Loading: a worker calls ``prime`` before serving (files are read: a broken policy file
stops the start; Redis: this host's floor is adopted) and then runs ``loops`` (following the
store, refreshing keys, writing audit records); a command calls ``load_once``, which reads
the store as a worker's first sync does but never writes (no floor, no loss marker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from extauthz.audit.sinks import AuditLog
from extauthz.authorize import Authorizer
from extauthz.clock import SYSTEM_CLOCK, Clock
from extauthz.config import Settings, insecure_settings
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.identity.jwks import HttpFetcher, IssuerKeys
from extauthz.identity.verify import TokenVerifier
from extauthz.policy.match import PolicyIndex
from extauthz.policy.store import FilePolicyStore, PolicyStore, RedisPolicyStore, open_store
from extauthz.policy.sync import PolicySnapshot
from extauthz.policy.sync import followed as followed_policies
from extauthz.revocation.store import (
    FileRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    open_revocation_store,
)
from extauthz.revocation.sync import RevocationSnapshot
from extauthz.revocation.sync import followed as followed_revocations
from extauthz.stepup.ceremonies import Ceremonies
from extauthz.stepup.gate import StepupGate, keep_loading_key, signing_key_from_file
from extauthz.stepup.store import StepupStore, open_stepup_store
from extauthz.store.floor import Floor, floor_path, store_id
from extauthz.store.follow import Followed, TrackedSnapshot, adopt_floor, follow_file, follow_redis
from extauthz.store.redis_client import redis_client
from extauthz.store.redis_hash import RedisHash, judge
from extauthz.store.redis_safety import PROBLEMS, RedisSafety, check_redis
from extauthz.telemetry.metrics import Metrics, SharedMetrics

# A worker's lines keep the logger name they had when server.py wired it (operators match it).
log = logging.getLogger("extauthz.server")

Loop = Coroutine[Any, Any, None]


@dataclass
class RedisWatch:
    """The last check of Redis' settings (``redis_safety.py``), repeated in the background."""

    safety: RedisSafety | None = None

    async def run(self, store: RedisHash, interval: float) -> None:
        """At start and every ``store.safety_check_interval``: unsafe settings are an ERROR
        every time they are seen (and a metric, and /readyz)."""
        while True:
            try:
                safety = await check_redis(store.client, store.description)
            except StoreUnavailable:
                pass  # the sync loop says so; check again later
            else:
                if not safety.safe:
                    log.error("store: Redis can lose the policies and revocations: %s (see the "
                              "README, Redis)", safety.detail)
                elif self.safety is None or not self.safety.safe:
                    log.info("store: %s", safety.detail)
                self.safety = safety
            await asyncio.sleep(interval)


@dataclass(frozen=True, kw_only=True)
class Engine:
    """Everything that decides, for one process."""

    settings: Settings
    clock: Clock
    fetcher: HttpFetcher
    issuer_keys: Mapping[str, IssuerKeys]
    verifier: TokenVerifier
    policies: PolicySnapshot
    policy_store: PolicyStore | None  # None: no store, the default action decides
    revocations: RevocationSnapshot
    revocation_store: RevocationStore
    stepup_store: StepupStore
    stepups: StepupGate
    ceremonies: Ceremonies
    authorizer: Authorizer
    audit: AuditLog
    audit_redis: aioredis.Redis | None  # audit.redis_url: the stream's own client
    metrics: Metrics
    shared_metrics: SharedMetrics
    floor: Floor | None  # Redis: each worker's last good snapshot, on local disk
    redis: RedisWatch = field(default_factory=RedisWatch)

    # --- readiness rules --------------------------------------------------------------
    def cold(self) -> str | None:
        """What is still missing before checks can be answered, or None."""
        if not self.policies.ready:
            return f"no policies loaded yet ({self.policies.note or 'connecting'})"
        if not self.revocations.ready:
            return f"no revocations loaded yet ({self.revocations.note or 'connecting'})"
        if (self.settings.store.require_safe_redis
                and isinstance(self.revocation_store, RedisRevocationStore)):
            safety = self.redis.safety
            if safety is None or not safety.safe:
                return ("store.require_safe_redis: " + (safety.detail if safety else
                                                        "Redis' settings not checked yet"))
        missing = [k.issuer.issuer for k in self.issuer_keys.values() if not k.loaded]
        if missing:
            return "no signing keys yet for: " + ", ".join(missing)
        if not self.stepups.loaded:
            return "the step-up cookie key is not loaded yet"
        return None

    def status(self) -> tuple[bool, str]:
        """Whether it can decide, and the details /readyz shows (stale or refused data,
        unsafe Redis or settings: ready, but never silently so)."""
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
        safety = self.redis.safety
        if safety is not None and not safety.safe:
            status += f"; UNSAFE REDIS: {safety.detail}"
        for unsafe in insecure_settings(self.settings):
            status += f"; UNSAFE: {unsafe}"
        return True, status

    # --- loading ----------------------------------------------------------------------
    def _followed(self, *, write_floor: bool) -> list[Followed]:
        """What follows Redis: the revocations whenever store.url is Redis, the policies too
        unless store.policies reads them from files."""
        store, revs = self.policy_store, self.revocation_store
        kept = self.floor if write_floor else None
        followed = []
        if isinstance(store, RedisPolicyStore):
            followed.append(followed_policies(store, self.policies, kept))
        if isinstance(revs, RedisRevocationStore):
            followed.append(followed_revocations(revs, self.revocations, kept))
        return followed

    async def prime(self) -> None:
        """A worker, before serving. Files are read now (a broken policy file stops the
        start); Redis is followed later, and its floor (what this host's workers last
        enforced) serves until the store confirms or replaces it."""
        if isinstance(self.revocation_store, RedisRevocationStore):
            sections = await asyncio.to_thread(self.floor.read) if self.floor is not None else {}
            for f in self._followed(write_floor=False):
                if f.kind in sections:
                    adopt_floor(f, sections[f.kind])
        await self._load_files()

    async def load_once(self) -> None:
        """A command (``policy explain``): the policies and revocations a worker following
        the store holds. Redis data that a worker would refuse (the store lost data) is
        refused here too, without marking the store or reading a floor: nothing is
        written. Raises StoreUnavailable when the store cannot be read."""
        await self._load_files()
        for f in self._followed(write_floor=False):
            assert f.redis is not None
            state, loaded = await f.redis.load_state()
            snap: TrackedSnapshot = f.snapshot
            condition = judge(None, state)
            if condition is not None:
                snap.refuse(condition, state, f.description)
                continue
            snap.installed(snap.build(loaded), loaded, state)

    async def _load_files(self) -> None:
        store, revs = self.policy_store, self.revocation_store
        if isinstance(revs, FileRevocationStore):
            self.revocations.install(await revs.load())
        if isinstance(store, FilePolicyStore):
            if not store.path.exists():
                raise ConfigError(f"config: 'store.url' names {store.path}, which does not exist; "
                                  "create it (`extauthz policy apply` does) or fix the path "
                                  "(relative paths start at the working directory)")
            self.policies.install(await store.load())

    def loops(self) -> dict[str, Loop]:
        """A worker's background work, by task name: key refreshes, following the store,
        the step-up key until it loads, audit records, metric snapshots."""
        s = self.settings
        interval = s.store.poll_interval
        loops: dict[str, Loop] = {f"jwks:{k.issuer.issuer}": k.run()
                                  for k in self.issuer_keys.values()}
        store, revs = self.policy_store, self.revocation_store
        if isinstance(revs, RedisRevocationStore):
            loops["redis-sync"] = follow_redis(revs.client, revs.channel,
                                               self._followed(write_floor=True), interval)
            loops["redis-safety"] = self.redis.run(revs, s.store.safety_check_interval)
        elif isinstance(revs, FileRevocationStore):
            loops["revocations"] = follow_file(
                revs.signature, followed_revocations(revs, self.revocations), interval)
        if isinstance(store, FilePolicyStore):
            loops["policies"] = follow_file(
                store.signature, followed_policies(store, self.policies), interval)
        if self.audit.enabled:
            loops["audit"] = self.audit.run()
        if self.shared_metrics.dir is not None:
            loops["metrics"] = _write_metrics(self.shared_metrics)
        if not self.stepups.loaded:
            loops["stepup-key"] = keep_loading_key(self.stepups, self.stepup_store)
        return loops

    async def close(self) -> None:
        await self.fetcher.close()
        if self.policy_store is not None:
            await self.policy_store.close()
        await self.stepup_store.close()
        await self.revocation_store.close()
        if self.audit_redis is not None:
            with contextlib.suppress(Exception):
                await self.audit_redis.aclose()
        self.metrics.shutdown()


async def _write_metrics(shared: SharedMetrics) -> None:
    while True:
        await asyncio.to_thread(shared.write)
        await asyncio.sleep(1.0)


def build_engine(settings: Settings, *, clock: Clock = SYSTEM_CLOCK, worker: bool = True) -> Engine:
    """The parts, wired once. ``worker=False`` (``policy explain``): the same deciding parts,
    but no audit sinks and no metric exporters (nothing it decides is recorded)."""
    s = settings.store
    stepup_store = open_stepup_store(s.url, s.prefix, s.timeout, s.state_file, clock)
    revocation_store = open_revocation_store(s.url, s.prefix, s.timeout, stepup_store, clock)
    revocations = RevocationSnapshot(clock)
    fetcher = HttpFetcher(settings.jwks.fetch_timeout)
    keys = {i.issuer: IssuerKeys(i, settings.jwks, fetcher, clock) for i in settings.issuers}
    verifier = TokenVerifier(settings, keys, clock, revocations)
    policies = PolicySnapshot(clock)
    store = open_store(s.url, s.prefix, s.timeout, s.policies)
    if store is None:
        policies.index = PolicyIndex([], "none")  # no store: the default action decides
    stepups = StepupGate(cookie_name=settings.stepup.cookie_name,
                         lifetime=settings.stepup.max_age_limit, clock=clock,
                         revocations=revocations)
    if settings.stepup.signing_key_file is not None:
        stepups.use_key(signing_key_from_file(settings.stepup.signing_key_file))
    environ = os.environ if worker else {}
    metrics = Metrics(worker=environ.get("EXTAUTHZ_WORKER_ID", "0"), environ=environ)
    shared = revocation_store if isinstance(revocation_store, RedisRevocationStore) else None
    audit, audit_redis = _audit(settings, clock, shared, worker=worker)
    engine = Engine(
        settings=settings, clock=clock, fetcher=fetcher, issuer_keys=keys, verifier=verifier,
        policies=policies, policy_store=store, revocations=revocations,
        revocation_store=revocation_store, stepup_store=stepup_store, stepups=stepups,
        ceremonies=Ceremonies(settings.stepup, stepup_store, clock),
        authorizer=Authorizer(settings=settings, verifier=verifier, policies=policies,
                              stepups=stepups, clock=clock, revocations=revocations,
                              on_dry_run=lambda pid: metrics.dry_run.add(1, {"policy": pid})),
        audit=audit, audit_redis=audit_redis, metrics=metrics,
        shared_metrics=SharedMetrics(metrics, environ.get("EXTAUTHZ_METRICS_DIR")),
        floor=(Floor(floor_path(s), store_id(s.url, s.prefix))
               if shared is not None and s.url else None))
    _observe(engine)
    return engine


def _audit(settings: Settings, clock: Clock, store: RedisHash | None, *, worker: bool
           ) -> tuple[AuditLog, aioredis.Redis | None]:
    """The audit log, and the stream's own Redis client when audit.redis_url gives one."""
    a, s = settings.audit, settings.store
    if not worker:
        return AuditLog(clock, stdout=False), None
    own: aioredis.Redis | None = None
    client: aioredis.Redis | None = None
    if a.redis_stream and a.redis_url:  # its own Redis: the stream cannot crowd out the state
        own = client = redis_client(a.redis_url, s.timeout)
    elif a.redis_stream and store is not None:
        log.warning("audit: the stream shares Redis with the policies and revocations, capped at "
                    "about %d records (audit.stream_maxlen); size maxmemory for it, or give it its "
                    "own instance with audit.redis_url", a.stream_maxlen)
        client = store.client
    audit = AuditLog(clock, stdout=a.stdout, flush_interval=a.flush_interval, redis=client,
                     stream=s.prefix + "audit", maxlen=a.stream_maxlen)
    return audit, own


def _observe(e: Engine) -> None:
    """Read at scrape time: the per-request path pays nothing for these."""
    m = e.metrics
    m.observe("extauthz.token_cache.lookups", "Verified-token cache lookups by result",
              lambda: [(e.verifier.cache_hits, {"result": "hit"}),
                       (e.verifier.cache_misses, {"result": "miss"})], counter=True)
    m.observe("extauthz.jwks.fetches", "JWKS and discovery fetches per issuer by result",
              lambda: [v for k in e.issuer_keys.values() for v in (
                  (k.fetches - k.failures, {"issuer": k.issuer.issuer, "result": "ok"}),
                  (k.failures, {"issuer": k.issuer.issuer, "result": "error"}))], counter=True)
    m.observe("extauthz.store.errors", "Failed loads from the store (Redis or files)",
              lambda: [(e.policies.errors, {"data": "policies"}),
                       (e.revocations.errors, {"data": "revocations"})], counter=True)
    m.observe("extauthz.policy.snapshot.age", "Seconds since the store last confirmed the "
              "policies (grows while Redis is unreachable)",
              lambda: [(e.policies.staleness() or 0.0, {})], counter=False, unit="s")
    m.observe("extauthz.revocation.snapshot.age", "Seconds since the store last confirmed the "
              "revocations (grows while Redis is unreachable)",
              lambda: [(e.revocations.staleness() or 0.0, {})], counter=False, unit="s")
    m.observe("extauthz.policy.snapshot.revision", "Policy revision in force (value 1)",
              lambda: [(1, {"revision": e.policies.revision or "none"})], counter=False)
    m.observe("extauthz.demo_issuer.enabled", "1 while the demo issuer (anyone signs in as "
              "anyone) is on; alert on it",
              lambda: [(int(e.settings.demo_issuer.enabled), {})], counter=False)
    m.observe("extauthz.policies", "Policies in force",
              lambda: [(len(e.policies.index) if e.policies.index else 0, {})], counter=False)
    m.observe("extauthz.revocations", "Revocations in force",
              lambda: [(len(e.revocations.current) if e.revocations.current else 0, {})],
              counter=False)
    m.observe("extauthz.store.loads", "Full reads of the records from the store (each parses "
              "and compiles; an event whose revision is unchanged costs none)",
              lambda: [(e.policies.loads, {"data": "policies"}),
                       (e.revocations.loads, {"data": "revocations"})], counter=True)
    m.observe("extauthz.store.refused", "1 while the worker refuses the store's data for the "
              "named condition (epoch_lost, revision_backwards, records_lost, epoch_replaced, "
              "restore_pending) and keeps its snapshot; restore with `extauthz store reseed`",
              lambda: [(1, {"data": snap.what, "condition": snap.refused})
                       for snap in (e.policies, e.revocations) if snap.refused is not None],
              counter=False)
    m.observe("extauthz.store.redis_unsafe", "1 for each way Redis' settings can lose the state "
              "(eviction, no_persistence) or could not be checked (unchecked)",
              lambda: [] if e.redis.safety is None else [
                  (1 if p in e.redis.safety.problems else 0, {"problem": p}) for p in PROBLEMS],
              counter=False)
