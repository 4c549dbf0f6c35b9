"""The scenarios, and one benchmark run: start the stack, check that every scenario is
answered as it should be, then load each one in turn for several rounds, so that every
comparison is a ratio of figures measured in the same run, minutes apart at most."""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks import policyset
from benchmarks.checks import check_request, grpc_frame
from benchmarks.load import LoadResult, grpc_url, h2load, paced, wrk
from benchmarks.procs import cpu_seconds, rss_mb
from benchmarks.stack import NOAUTH_HOST, BenchError, Instance, Stack, check_once

UNAUTHENTICATED, PERMISSION_DENIED = 16, 7


ENVOY_VARIANTS = {
    "envoy-only": "the same route with ext_authz disabled",
    "envoy-floor": "ext_authz calling the floor server (transport only)",
    "envoy-e2e": "ext_authz calling extauthz (allow-cached)",
}


# Every name --only accepts (a prefix before the first '-' selects a family: allow, deny, envoy).
SCENARIO_NAMES = ("floor", "allow-cached", "allow-verify-rs256", "allow-verify-es256", "deny-missing",
                  "deny-bad-signature", "deny-policy", "stepup-challenge", "policies-10k", "workers",
                  *ENVOY_VARIANTS, "soak")


@dataclass(frozen=True)
class Options:
    rounds: int = 3
    seconds: float = 5.0
    warmup: float = 1.0
    connections: int = 4
    streams: int = 16
    workers: int = 2
    rates: tuple[int, ...] = (500, 1000, 2000)
    soak_seconds: float = 120.0
    soak_tokens: int = 10_000
    only: frozenset[str] = frozenset()
    quick: bool = False


@dataclass(frozen=True)
class GrpcScenario:
    name: str
    description: str
    instance: str  # an Instance name, or "floor"
    body: bytes  # one serialized CheckRequest
    code: int  # the gRPC status in the CheckResponse (0: allow)
    http: int | None = None  # the denial's HTTP status
    connections: int | None = None
    threads: int = 1


@dataclass
class Outcome:
    scenario: str
    group: str
    description: str
    runs: list[dict[str, Any]] = field(default_factory=list)


def _stat(values: Sequence[float]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarise(outcome: Outcome) -> dict[str, Any]:
    runs = outcome.runs
    summary: dict[str, Any] = {
        "throughput": _stat([r["throughput"] for r in runs]),
        "server_cpu_cores": _stat([r["server_cpu_cores"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }
    for q in ("p50", "p90", "p99", "p999"):
        summary[q] = _stat([r["latency_ms"][q] for r in runs if q in r["latency_ms"]])
    return {
        "name": outcome.scenario,
        "group": outcome.group,
        "description": outcome.description,
        "runs": runs,
        "summary": summary,
    }


def decisions(instance: Instance) -> dict[str, float]:
    """Checks answered so far by reason, summed over the instance's workers."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(instance.metrics()):
        if family.name == "extauthz_checks":
            for s in family.samples:
                if s.name == "extauthz_checks_total" and "reason" in s.labels:
                    out[s.labels["reason"]] = out.get(s.labels["reason"], 0.0) + s.value
    return out


def grpc_scenarios(stack: Stack, workers: int) -> list[GrpcScenario]:
    assert stack.issuer is not None
    rs256, es256 = stack.issuer.mint("RS256"), stack.issuer.mint("ES256")
    head, _, sig = rs256.rpartition(".")
    forged = f"{head}.{sig[:-8]}{'A' * 8 if sig[-8:] != 'A' * 8 else 'B' * 8}"

    def body(path: str, token: str | None) -> bytes:
        return check_request(host=policyset.TARGET_HOST, path=path, token=token).SerializeToString()

    allow = body(policyset.ALLOW_PATH, rs256)
    out = [
        GrpcScenario("floor", "bare grpc.aio server, constant allow: the transport floor", "floor", allow, 0),
        GrpcScenario("allow-cached", "valid token seen before, 1,000 policies", "main", allow, 0),
        GrpcScenario(
            "allow-verify-rs256",
            "full RS256 verification on every check (token cache off)",
            "verify",
            allow,
            0,
        ),
        GrpcScenario(
            "allow-verify-es256",
            "full ES256 verification on every check (token cache off)",
            "verify",
            body(policyset.ALLOW_PATH, es256),
            0,
        ),
        GrpcScenario(
            "deny-missing",
            "no token: 401 with a Bearer challenge",
            "main",
            body(policyset.ALLOW_PATH, None),
            UNAUTHENTICATED,
            401,
        ),
        GrpcScenario(
            "deny-bad-signature",
            "RS256 token with a forged signature: 401",
            "main",
            body(policyset.ALLOW_PATH, forged),
            UNAUTHENTICATED,
            401,
        ),
        GrpcScenario(
            "deny-policy",
            "valid token, policy needs a group the user lacks: 403",
            "main",
            body(policyset.DENY_PATH, rs256),
            PERMISSION_DENIED,
            403,
        ),
        GrpcScenario(
            "stepup-challenge",
            "route needs a recent passkey: RFC 9470 401",
            "main",
            body(policyset.STEPUP_PATH, rs256),
            UNAUTHENTICATED,
            401,
        ),
        GrpcScenario("policies-10k", "allow-cached with 10,000 policies", "p10k", allow, 0),
    ]
    if workers > 1:
        out += [
            GrpcScenario(
                "workers-1",
                "allow-cached, 1 process, client with 2 threads",
                "main",
                allow,
                0,
                connections=8,
                threads=2,
            ),
            GrpcScenario(
                f"workers-{workers}",
                f"allow-cached, {workers} processes (SO_REUSEPORT)",
                "workers",
                allow,
                0,
                connections=8,
                threads=2,
            ),
        ]
    return out


class Bench:
    def __init__(self, stack: Stack, options: Options, log: Callable[[str], None]) -> None:
        self.stack = stack
        self.options = options
        self.log = log
        self.outcomes: dict[str, Outcome] = {}
        self.expected_reason: dict[str, str] = {}

    def wanted(self, name: str) -> bool:
        only = self.options.only
        return not only or name in only or name.split("@")[0] in only or name.split("-")[0] in only

    # --- checks before load --------------------------------------------------------------
    def probe(self, scenarios: Sequence[GrpcScenario]) -> None:
        for s in scenarios:
            address = (
                self.stack.floor_address
                if s.instance == "floor"
                else self.stack.instances[s.instance].address
            )
            resp = check_once(address, s.body)
            got_http = resp.denied_response.status.code if resp.HasField("denied_response") else None
            if resp.status.code != s.code or (s.http is not None and got_http != s.http):
                raise BenchError(
                    f"scenario {s.name}: expected gRPC code {s.code} / HTTP {s.http}, "
                    f"got {resp.status.code} / {got_http} ({resp.status.message})"
                )
            self.expected_reason[s.name] = resp.status.message or "allowed"

    # --- load -------------------------------------------------------------------------------
    def run_grpc(self, s: GrpcScenario, round_no: int) -> None:
        o = self.options
        work = self.stack.work
        body_file = work / f"{s.name}.bin"
        body_file.write_bytes(grpc_frame(s.body))
        if s.instance == "floor":
            address, instance = self.stack.floor_address, None
            pids = self._floor_pids()
        else:
            instance = self.stack.instances[s.instance]
            address, pids = instance.address, instance.pids
        before = decisions(instance) if instance else {}
        result = h2load(
            grpc_url(address),
            seconds=o.seconds,
            warmup=o.warmup,
            log=work / f"{s.name}.log.tsv",
            cpu=lambda: cpu_seconds(pids),
            connections=s.connections or o.connections,
            streams=o.streams,
            threads=s.threads,
            body=body_file,
        )
        wrong = 0
        if instance is not None:
            if len(pids) > 1:
                time.sleep(1.2)  # other workers' metric snapshots are written every second
            after = decisions(instance)
            reason = self.expected_reason[s.name]
            delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            wrong = max(0, int(sum(delta.values()) - delta.get(reason, 0.0)))
        self.record(
            s.name,
            "workers" if s.name.startswith("workers-") else "grpc",
            s.description,
            round_no,
            result,
            extra_errors=wrong,
        )

    def run_envoy(self, rate: int, variant: str, round_no: int) -> None:
        """``variant``: "envoy-only" (ext_authz off on the route), "envoy-floor" (ext_authz
        calling the floor server), "envoy-e2e" (ext_authz calling extauthz)."""
        assert self.stack.issuer is not None
        o = self.options
        name = f"{variant}@{rate}"
        host = NOAUTH_HOST if variant == "envoy-only" else policyset.TARGET_HOST
        if variant == "envoy-floor":
            port, pids = self.stack.floor_gateway_port, [*self._floor_pids(), *self._pids_of("envoy-floor")]
        else:
            port, pids = (
                self.stack.gateway_port,
                [*self.stack.instances["main"].pids, *self._pids_of("envoy")],
            )
        result = paced(
            f"http://127.0.0.1:{port}{policyset.ALLOW_PATH}",
            rate=rate,
            seconds=o.seconds,
            warmup=o.warmup,
            logs=self.stack.work / name,
            cpu=lambda: cpu_seconds(pids),
            headers=[
                f":authority: {host}",
                f"authorization: Bearer {self._envoy_token}",
                "accept: application/json",
            ],
        )
        self.record(
            name,
            "envoy",
            f"through Envoy at {rate} req/s, {ENVOY_VARIANTS[variant]}",
            round_no,
            result,
            rate=rate,
        )

    def soak(self) -> dict[str, Any] | None:
        o = self.options
        if o.soak_seconds <= 0 or not self.wanted("soak"):
            return None
        assert self.stack.issuer is not None
        count = o.soak_tokens
        self.log(f"soak: minting {count} tokens, then {o.soak_seconds:.0f}s of wrk through Envoy")
        tokens = self.stack.work / "soak-tokens.txt"
        tokens.write_text(
            "\n".join(self.stack.issuer.mint("ES256", subject=f"user-{i:05d}") for i in range(count)) + "\n"
        )
        main = self.stack.instances["main"]
        workers = [p for p in main.pids] if len(main.pids) == 1 else main.pids[1:]
        samples: list[dict[str, Any]] = []
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "rss_mb": {f"worker-{i + 1}": round(rss_mb(p), 2) for i, p in enumerate(workers)},
                    }
                )
                stop.wait(max(0.5, o.soak_seconds / 60))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = wrk(
                f"http://127.0.0.1:{self.stack.gateway_port}",
                seconds=o.soak_seconds,
                tokens=tokens,
                host=policyset.TARGET_HOST,
                path=policyset.ALLOW_PATH,
                work=self.stack.work,
                cpu=lambda: cpu_seconds(workers),
            )
        finally:
            stop.set()
            sampler.join()
        # The first tenth warms the caches (10,000 first verifications); flat means after that.
        settled_at = o.soak_seconds / 10
        settled = [s for s in samples if s["t"] >= settled_at] or samples
        first, last = settled[0]["rss_mb"], samples[-1]["rss_mb"]
        change = {k: (last[k] - first[k]) / first[k] if first[k] else 0.0 for k in first}
        return {
            "seconds": o.soak_seconds,
            "tokens": count,
            "rate": round(result.throughput),
            "errors": result.failed + result.non_2xx,
            "latency_ms": result.latency_ms,
            "samples": samples,
            "settled_at": settled[0]["t"],
            "change": change,
            "target": "within ±10%",
            "met": all(abs(v) <= 0.10 for v in change.values()),
        }

    # --- bookkeeping --------------------------------------------------------------------------
    def record(
        self,
        name: str,
        group: str,
        description: str,
        round_no: int,
        r: LoadResult,
        extra_errors: int = 0,
        rate: int | None = None,
    ) -> None:
        outcome = self.outcomes.setdefault(name, Outcome(name, group, description))
        run = {
            "round": round_no,
            "requests": r.requests,
            "errors": r.failed + r.non_2xx + extra_errors,
            "seconds": r.seconds,
            "throughput": r.throughput,
            "latency_ms": r.latency_ms,
            "server_cpu_cores": None if r.server_cpu_cores is None else round(r.server_cpu_cores, 3),
            "client_cpu_cores": round(r.client_cpu_cores, 3),
            "steal_cores": round(r.steal_cores, 3),
            "rate": rate,
        }
        outcome.runs.append(run)
        lat = r.latency_ms
        self.log(
            f"  round {round_no} {name:22s} {r.throughput:8.0f} req/s  p50 {lat.get('p50', 0):6.2f} ms  "
            f"p99 {lat.get('p99', 0):6.2f} ms  errors {run['errors']}  server CPU "
            + ("-" if r.server_cpu_cores is None else f"{r.server_cpu_cores:.2f}")
            + (f"  stolen by the host {r.steal_cores:.2f}" if r.steal_cores >= 0.05 else "")
        )

    @functools.cached_property
    def _envoy_token(self) -> str:
        assert self.stack.issuer is not None
        return self.stack.issuer.mint("RS256")

    def _pids_of(self, process_name: str) -> list[int]:
        return [p.proc.pid for p in self.stack.processes if p.name == process_name and p.proc is not None]

    def _floor_pids(self) -> list[int]:
        return self._pids_of("floor")


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def comparisons(outcomes: dict[str, Outcome], workers: int, rates: Sequence[int]) -> list[dict[str, Any]]:
    by_round: dict[str, dict[int, dict[str, Any]]] = {
        name: {r["round"]: r for r in o.runs} for name, o in outcomes.items()
    }
    out: list[dict[str, Any]] = []

    def add(
        name: str, metric: str, values: list[float], target: str | None, met: Callable[[float], bool] | None
    ) -> None:
        if not values:
            return
        median = statistics.median(values)
        out.append(
            {
                "name": name,
                "metric": metric,
                "values": [round(v, 4) for v in values],
                "median": round(median, 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
                "target": target,
                "met": met(median) if met is not None else None,
            }
        )

    def ratio(a: str, b: str, scale: float = 1.0, key: str = "throughput") -> list[float]:
        ra, rb = by_round.get(a, {}), by_round.get(b, {})
        return [ra[n][key] / (rb[n][key] * scale) for n in sorted(ra) if n in rb and rb[n][key]]

    def cpu_ratio(a: str, b: str) -> list[float]:  # floor's CPU per check / scenario's
        ra, rb = by_round.get(a, {}), by_round.get(b, {})
        return [
            (rb[n]["server_cpu_cores"] / rb[n]["throughput"])
            / (ra[n]["server_cpu_cores"] / ra[n]["throughput"])
            for n in sorted(ra)
            if n in rb and ra[n]["throughput"] and rb[n]["throughput"] and ra[n]["server_cpu_cores"]
        ]

    add(
        "allow-cached / floor",
        "throughput ratio",
        ratio("allow-cached", "floor"),
        ">= 0.90",
        lambda v: v >= 0.90,
    )
    add(
        "allow-cached / floor",
        "CPU per check ratio (floor's / ours)",
        cpu_ratio("allow-cached", "floor"),
        None,
        None,
    )
    for alg in ("rs256", "es256"):
        add(
            f"allow-verify-{alg} / floor",
            "throughput ratio",
            ratio(f"allow-verify-{alg}", "floor"),
            ">= 0.60",
            lambda v: v >= 0.60,
        )
    add(
        "policies-10k / allow-cached",
        "throughput ratio",
        ratio("policies-10k", "allow-cached"),
        ">= 0.95",
        lambda v: v >= 0.95,
    )
    if workers > 1:
        add(
            f"workers-{workers} / ({workers} x workers-1)",
            "scaling",
            ratio(f"workers-{workers}", "workers-1", scale=workers),
            ">= 0.80",
            lambda v: v >= 0.80,
        )

    def added(a: str, b: str, q: str) -> list[float]:
        on, off = by_round.get(a, {}), by_round.get(b, {})
        return [
            on[n]["latency_ms"][q] - off[n]["latency_ms"][q]
            for n in sorted(on)
            if n in off and q in on[n]["latency_ms"] and q in off[n]["latency_ms"]
        ]

    if workers > 1:
        add(
            f"workers-{workers} / workers-1 per CPU core used",
            "throughput per server core, ratio",
            cpu_ratio(f"workers-{workers}", "workers-1"),
            None,
            None,
        )
    for rate in rates:
        for q, limit in (("p50", 1.0), ("p99", 3.0)):
            target = f"<= {limit:g} ms" if rate == 1000 else None
            add(
                f"envoy-e2e @{rate}/s: added {q}",
                "ms vs envoy-only",
                added(f"envoy-e2e@{rate}", f"envoy-only@{rate}", q),
                target,
                _at_most(limit) if rate == 1000 else None,
            )
            add(
                f"  of which gRPC transport (floor) @{rate}/s {q}",
                "ms: envoy-floor - envoy-only",
                added(f"envoy-floor@{rate}", f"envoy-only@{rate}", q),
                None,
                None,
            )
            add(
                f"  of which extauthz logic @{rate}/s {q}",
                "ms: envoy-e2e - envoy-floor",
                added(f"envoy-e2e@{rate}", f"envoy-floor@{rate}", q),
                None,
                None,
            )
    return out


def machine() -> dict[str, str]:
    import platform

    import grpc

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "kernel": platform.release(),
    }
