"""The scenarios, and one benchmark run: start the stack, check that every scenario is
answered as it should be, then load each one in turn for several rounds, so that every
comparison is a ratio of figures measured in the same run, minutes apart at most.

Three families, each with its floor (the transport answering a constant allow):
- gRPC straight to the service (h2load, raw CheckRequests): ``floor``, ``allow-cached`` …
- plain HTTP straight to the service (wrk, the headers Envoy's ``http_service`` sends):
  ``http-floor``, ``http-allow-cached`` …
- through ONE Envoy worker (``envoy-*``): at fixed rates (h2load, one paced connection per
  100 req/s) and at saturation (``@max``, wrk): Envoy alone, Envoy's own ``jwt_authn`` (the
  peer), ext_authz over gRPC and over HTTP calling extauthz, and calling each floor.
"""

from __future__ import annotations

import dataclasses
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
from benchmarks.checks import check_request, grpc_frame, http_check_headers
from benchmarks.gateways import NOAUTH_HOST
from benchmarks.load import LoadResult, grpc_url, h2load, paced, wrk
from benchmarks.procs import cpu_seconds, rss_mb
from benchmarks.stack import BenchError, Instance, Stack, check_once, http_get

UNAUTHENTICATED, PERMISSION_DENIED = 16, 7


@dataclass(frozen=True)
class EnvoyVariant:
    gateway: str  # the Envoy process (Stack.gateways)
    backend: str | None  # the authorizer's process: an Instance name, "floor", "http-floor"
    description: str
    host: str = policyset.TARGET_HOST


ENVOY_VARIANTS = {
    "envoy-only": EnvoyVariant("envoy", None, "Envoy alone: the same route with ext_authz off",
                               NOAUTH_HOST),
    "envoy-jwt": EnvoyVariant("envoy-jwt", None,
                              "Envoy's jwt_authn (same keys via local_jwks, same token): the peer"),
    "envoy-grpc": EnvoyVariant("envoy", "main", "ext_authz over gRPC calling extauthz (allow-cached)"),
    "envoy-http": EnvoyVariant("envoy-http", "main", "ext_authz over HTTP calling extauthz (allow-cached)"),
    "envoy-grpc-floor": EnvoyVariant("envoy-grpc-floor", "floor",
                                     "ext_authz grpc_service calling the gRPC floor (transport only)"),
    "envoy-http-floor": EnvoyVariant("envoy-http-floor", "http-floor",
                                     "ext_authz http_service calling the HTTP floor (transport only)"),
}
HTTP_VARIANTS = ("envoy-http", "envoy-http-floor")  # need envoy/gateway-http.yaml

# Every name --only accepts; a name also selects those it prefixes up to a '-' ("allow",
# "deny", "envoy", "http", "http-allow", "envoy-http", "envoy-jwt@max" …).
SCENARIO_NAMES = ("floor", "allow-cached", "allow-verify-rs256", "allow-verify-es256", "deny-missing",
                  "deny-bad-signature", "deny-policy", "stepup-challenge", "policies-10k", "workers",
                  "http-floor", "http-allow-cached", "http-allow-verify-rs256", "http-allow-verify-es256",
                  "http-deny-missing", "http-deny-bad-signature", "http-deny-policy",
                  "http-stepup-challenge", "http-workers", *ENVOY_VARIANTS, "soak", "soak-http")


@dataclass(frozen=True)
class Options:
    rounds: int = 3
    seconds: float = 3.0
    warmup: float = 0.5
    connections: int = 4
    streams: int = 16
    http_connections: int = 16  # wrk straight to the HTTP Check port
    envoy_connections: int = 32  # wrk through Envoy at saturation
    workers: int = 2
    rates: tuple[int, ...] = (1000, 2000)
    soak_seconds: float = 60.0
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


@dataclass(frozen=True)
class HttpScenario:
    name: str
    description: str
    instance: str  # an Instance name, or "http-floor"
    path: str
    token: str | None
    status: int  # the answer's HTTP status: 200 allows
    connections: int | None = None
    threads: int = 1


@dataclass
class Outcome:
    scenario: str
    group: str
    description: str
    runs: list[dict[str, Any]] = field(default_factory=list)


def _stat(values: Sequence[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarise(outcome: Outcome) -> dict[str, Any]:
    runs = outcome.runs
    summary: dict[str, Any] = {
        "throughput": _stat([r["throughput"] for r in runs]),
        "server_cpu_cores": _stat([r["server_cpu_cores"] for r in runs]),
        "cpu_us_per_check": _stat([r.get("cpu_us_per_check") for r in runs]),
        "authorizer_cpu_us_per_check": _stat([r.get("authorizer_cpu_us_per_check") for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }
    for q in ("mean", "p50", "p90", "p99", "p999"):
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


class _Tokens:
    """The scenarios' tokens: one RS256 and one ES256, and an RS256 one with a forged signature."""

    def __init__(self, stack: Stack) -> None:
        assert stack.issuer is not None
        self.rs256, self.es256 = stack.issuer.mint("RS256"), stack.issuer.mint("ES256")
        head, _, sig = self.rs256.rpartition(".")
        self.forged = f"{head}.{sig[:-8]}{'A' * 8 if sig[-8:] != 'A' * 8 else 'B' * 8}"


def grpc_scenarios(stack: Stack, workers: int) -> list[GrpcScenario]:
    t = _Tokens(stack)

    def body(path: str, token: str | None) -> bytes:
        return check_request(host=policyset.TARGET_HOST, path=path, token=token).SerializeToString()

    allow = body(policyset.ALLOW_PATH, t.rs256)
    out = [
        GrpcScenario("floor", "bare grpc.aio server, constant allow: the transport floor", "floor", allow, 0),
        GrpcScenario("allow-cached", "valid token seen before, 1,000 policies", "main", allow, 0),
        GrpcScenario("allow-verify-rs256", "full RS256 verification on every check (token cache off)",
                     "verify", allow, 0),
        GrpcScenario("allow-verify-es256", "full ES256 verification on every check (token cache off)",
                     "verify", body(policyset.ALLOW_PATH, t.es256), 0),
        GrpcScenario("deny-missing", "no token: 401 with a Bearer challenge", "main",
                     body(policyset.ALLOW_PATH, None), UNAUTHENTICATED, 401),
        GrpcScenario("deny-bad-signature", "RS256 token with a forged signature: 401", "main",
                     body(policyset.ALLOW_PATH, t.forged), UNAUTHENTICATED, 401),
        GrpcScenario("deny-policy", "valid token, policy needs a group the user lacks: 403", "main",
                     body(policyset.DENY_PATH, t.rs256), PERMISSION_DENIED, 403),
        GrpcScenario("stepup-challenge", "route needs a recent passkey: RFC 9470 401", "main",
                     body(policyset.STEPUP_PATH, t.rs256), UNAUTHENTICATED, 401),
        GrpcScenario("policies-10k", "allow-cached with 10,000 policies", "p10k", allow, 0),
    ]
    if workers > 1:
        out += [
            GrpcScenario("workers-1", "allow-cached, 1 process, client with 2 threads", "main", allow, 0,
                         connections=8, threads=2),
            GrpcScenario(f"workers-{workers}", f"allow-cached, {workers} processes (SO_REUSEPORT)",
                         "workers", allow, 0, connections=8, threads=2),
        ]
    return out


def http_scenarios(stack: Stack, workers: int) -> list[HttpScenario]:
    """The gRPC scenarios' requests as Envoy's http_service sends them (no Envoy)."""
    t = _Tokens(stack)
    allow, deny, stepup = policyset.ALLOW_PATH, policyset.DENY_PATH, policyset.STEPUP_PATH
    out = [
        HttpScenario("http-floor", "uvloop + httptools server, constant 200: the HTTP transport floor",
                     "http-floor", allow, t.rs256, 200),
        HttpScenario("http-allow-cached", "over HTTP: valid token seen before, 1,000 policies", "main",
                     allow, t.rs256, 200),
        HttpScenario("http-allow-verify-rs256", "over HTTP: full RS256 verification on every check",
                     "verify", allow, t.rs256, 200),
        HttpScenario("http-allow-verify-es256", "over HTTP: full ES256 verification on every check",
                     "verify", allow, t.es256, 200),
        HttpScenario("http-deny-missing", "over HTTP: no token, 401", "main", allow, None, 401),
        HttpScenario("http-deny-bad-signature", "over HTTP: forged RS256 signature, 401", "main", allow,
                     t.forged, 401),
        HttpScenario("http-deny-policy", "over HTTP: group missing, 403", "main", deny, t.rs256, 403),
        HttpScenario("http-stepup-challenge", "over HTTP: step-up needed, RFC 9470 401", "main", stepup,
                     t.rs256, 401),
    ]
    if workers > 1:
        out += [
            # One wrk thread outpaces several workers (~80k req/s to the floor): a second would
            # only take a core from the servers.
            HttpScenario("http-workers-1", "over HTTP: allow-cached, 1 process, 32 connections", "main",
                         allow, t.rs256, 200, connections=32),
            HttpScenario(f"http-workers-{workers}",
                         f"over HTTP: allow-cached, {workers} processes (SO_REUSEPORT)", "workers", allow,
                         t.rs256, 200, connections=32),
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
        return wanted(self.options.only, name)

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

    def probe_http(self, scenarios: Sequence[HttpScenario]) -> None:
        """One request each; the reason every later check must have is the one it was given."""
        for s in scenarios:
            instance = None if s.instance == "http-floor" else self.stack.instances[s.instance]
            before = decisions(instance) if instance else {}
            status = http_get(self._http_address(s), s.path,
                              {"host": policyset.TARGET_HOST, **dict(http_check_headers(s.token))})
            if status != s.status:
                raise BenchError(f"scenario {s.name}: expected HTTP {s.status}, got {status}")
            if instance is not None:
                deadline = time.monotonic() + 3.0  # other workers write their metrics every second
                while True:
                    after = decisions(instance)
                    new = [k for k in after if after[k] > before.get(k, 0.0)]
                    if new or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                if len(new) != 1:
                    raise BenchError(f"scenario {s.name}: the probe was counted under {new or 'no'} reason")
                self.expected_reason[s.name] = new[0]

    def probe_envoy(self, variants: Sequence[str]) -> None:
        for v in variants:
            port = self.stack.gateways[ENVOY_VARIANTS[v].gateway]
            status = http_get(f"127.0.0.1:{port}", policyset.ALLOW_PATH, self._envoy_headers(v))
            if status != 200:
                raise BenchError(f"scenario {v}: through Envoy the request was answered {status}, not 200")

    # --- load -------------------------------------------------------------------------------
    def run_grpc(self, s: GrpcScenario, round_no: int) -> None:
        o = self.options
        work = self.stack.work
        body_file = work / f"{s.name}.bin"
        body_file.write_bytes(grpc_frame(s.body))
        instance = None if s.instance == "floor" else self.stack.instances[s.instance]
        address = self.stack.floor_address if instance is None else instance.address
        pids = self._backend_pids(s.instance)
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
        wrong = self._wrong_decisions(s.name, instance, before)
        group = "workers" if s.name.startswith("workers-") else "grpc"
        self.record(s.name, group, s.description, round_no, result, extra_errors=wrong)

    def run_http(self, s: HttpScenario, round_no: int) -> None:
        o = self.options
        instance = None if s.instance == "http-floor" else self.stack.instances[s.instance]
        pids = self._backend_pids(s.instance)
        before = decisions(instance) if instance else {}
        result = wrk(
            f"http://{self._http_address(s)}",
            seconds=o.seconds,
            host=policyset.TARGET_HOST,
            path=s.path,
            headers=http_check_headers(s.token),
            work=self.stack.work,
            cpu=lambda: cpu_seconds(pids),
            connections=s.connections or o.http_connections,
            threads=s.threads,
        )
        wrong = self._wrong_decisions(s.name, instance, before)
        # wrk counts answers >= 400 only: a denial scenario expects every answer to be one.
        unexpected = result.non_2xx if s.status < 400 else result.requests - result.non_2xx
        group = "http-workers" if s.name.startswith("http-workers-") else "http"
        self.record(s.name, group, s.description, round_no, dataclasses.replace(result, non_2xx=unexpected),
                    extra_errors=wrong)

    def run_envoy(self, rate: int, variant: str, round_no: int) -> None:
        """``variant`` at a fixed ``rate``, paced (benchmarks/load.py paced)."""
        o = self.options
        v = ENVOY_VARIANTS[variant]
        name = f"{variant}@{rate}"
        envoy, backend = self._pids_of(v.gateway), self._backend_pids(v.backend)
        measure = _BackendCpu(backend)
        result = paced(
            f"http://127.0.0.1:{self.stack.gateways[v.gateway]}{policyset.ALLOW_PATH}",
            rate=rate,
            seconds=o.seconds,
            warmup=o.warmup,
            logs=self.stack.work / name,
            cpu=lambda: cpu_seconds([*envoy, *backend]),
            headers=[f"{k.lower()}: {val}" if k != "host" else f":authority: {val}"
                     for k, val in self._envoy_headers(variant).items()],
        )
        self.record(name, "envoy", f"through one Envoy worker at {rate} req/s: {v.description}", round_no,
                    result, rate=rate, authorizer_cores=measure.cores())

    def run_envoy_max(self, variant: str, round_no: int) -> None:
        """``variant`` at saturation: wrk's closed-loop connections through the one worker."""
        o = self.options
        v = ENVOY_VARIANTS[variant]
        name = f"{variant}@max"
        envoy, backend = self._pids_of(v.gateway), self._backend_pids(v.backend)
        headers = self._envoy_headers(variant)
        measure = _BackendCpu(backend)
        result = wrk(
            f"http://127.0.0.1:{self.stack.gateways[v.gateway]}",
            seconds=o.seconds,
            host=headers.pop("host"),
            path=policyset.ALLOW_PATH,
            headers=list(headers.items()),
            work=self.stack.work,
            cpu=lambda: cpu_seconds([*envoy, *backend]),
            connections=o.envoy_connections,
        )
        self.record(name, "envoy-max", f"through one Envoy worker at saturation: {v.description}",
                    round_no, result, authorizer_cores=measure.cores())

    def soak(self, transport: str = "grpc") -> dict[str, Any] | None:
        """RSS of the main instance's workers while wrk rotates ``soak_tokens`` distinct tokens
        through the gateway of ``transport`` ("grpc": gateway.yaml, "http": gateway-http.yaml).
        Each transport's soak has its own subjects, so the HTTP one also churns the token cache."""
        o = self.options
        name = "soak" if transport == "grpc" else f"soak-{transport}"
        gateway = "envoy" if transport == "grpc" else "envoy-http"
        if o.soak_seconds <= 0 or not self.wanted(name) or gateway not in self.stack.gateways:
            return None
        assert self.stack.issuer is not None
        count = o.soak_tokens
        self.log(f"{name}: minting {count} tokens, then {o.soak_seconds:.0f}s of wrk through Envoy "
                 f"({transport})")
        tokens = self.stack.work / f"{name}-tokens.txt"
        tokens.write_text("\n".join(self.stack.issuer.mint("ES256", subject=f"{transport}-user-{i:05d}")
                                    for i in range(count)) + "\n")
        main = self.stack.instances["main"]
        workers = list(main.pids) if len(main.pids) == 1 else main.pids[1:]
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
                f"http://127.0.0.1:{self.stack.gateways[gateway]}",
                seconds=o.soak_seconds,
                tokens=tokens,
                host=policyset.TARGET_HOST,
                path=policyset.ALLOW_PATH,
                headers=[("Accept", "application/json"), ("User-Agent", "bench-wrk/1.0")],
                work=self.stack.work,
                cpu=lambda: cpu_seconds(workers),
            )
        finally:
            stop.set()
            sampler.join()
        # The first fifth warms the caches (10,000 first verifications, ~7 s at gRPC's rate
        # through Envoy); flat means after that.
        settled_at = o.soak_seconds / 5
        settled = [s for s in samples if s["t"] >= settled_at] or samples
        first, last = settled[0]["rss_mb"], samples[-1]["rss_mb"]
        change = {k: (last[k] - first[k]) / first[k] if first[k] else 0.0 for k in first}
        return {
            "transport": transport,
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
        authorizer_cores: float | None = None,
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
            "cpu_us_per_check": _per_check(r.server_cpu_cores, r.throughput),
            "authorizer_cpu_cores": None if authorizer_cores is None else round(authorizer_cores, 3),
            "authorizer_cpu_us_per_check": _per_check(authorizer_cores, r.throughput),
            "client_cpu_cores": round(r.client_cpu_cores, 3),
            "steal_cores": round(r.steal_cores, 3),
            "rate": rate,
        }
        outcome.runs.append(run)
        lat = r.latency_ms
        per_check = run["cpu_us_per_check"]
        self.log(
            f"  round {round_no} {name:26s} {r.throughput:8.0f} req/s  mean {lat.get('mean', 0):6.2f} ms  "
            f"p99 {lat.get('p99', 0):6.2f} ms  errors {run['errors']}  server CPU "
            + ("-" if r.server_cpu_cores is None else f"{r.server_cpu_cores:.2f} cores")
            + ("" if per_check is None else f" {per_check:.0f} µs/check")
            + (f"  stolen by the host {r.steal_cores:.2f}" if r.steal_cores >= 0.05 else "")
        )

    def _wrong_decisions(self, name: str, instance: Instance | None, before: dict[str, float]) -> int:
        """Checks the instance counted under any reason but the scenario's, during the run."""
        if instance is None:
            return 0
        if len(instance.pids) > 1:
            time.sleep(1.2)  # other workers' metric snapshots are written every second
        after = decisions(instance)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        return max(0, int(sum(delta.values()) - delta.get(self.expected_reason[name], 0.0)))

    def _http_address(self, s: HttpScenario) -> str:
        if s.instance == "http-floor":
            return self.stack.http_floor_address
        return self.stack.instances[s.instance].check_http_address

    def _envoy_headers(self, variant: str) -> dict[str, str]:
        return {"host": ENVOY_VARIANTS[variant].host, "authorization": f"Bearer {self._envoy_token}",
                "accept": "application/json"}

    @functools.cached_property
    def _envoy_token(self) -> str:
        assert self.stack.issuer is not None
        return self.stack.issuer.mint("RS256")

    def _pids_of(self, process_name: str) -> list[int]:
        return [p.proc.pid for p in self.stack.processes if p.name == process_name and p.proc is not None]

    def _backend_pids(self, backend: str | None) -> list[int]:
        if backend is None:
            return []
        if backend in ("floor", "http-floor"):
            return self._pids_of(backend)
        return self.stack.instances[backend].pids


class _BackendCpu:
    """The cores the authorizer's processes used from now until ``cores()``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started, self.before = time.monotonic(), cpu_seconds(pids)

    def cores(self) -> float | None:
        if not self.pids:
            return None
        return (cpu_seconds(self.pids) - self.before) / (time.monotonic() - self.started)


def _per_check(cores: float | None, throughput: float) -> float | None:
    """CPU microseconds per answered request."""
    return None if cores is None or throughput <= 0 else round(cores / throughput * 1e6, 2)


def wanted(only: frozenset[str], name: str) -> bool:
    """Whether ``--only`` selects ``name`` ("envoy-http@1000"): no selection, the name, its
    part before "@", or a prefix ending at a "-" ("envoy", "http-allow", "envoy-http")."""
    if not only:
        return True
    base = name.split("@")[0]
    return any(o in (name, base) or base.startswith(f"{o}-") for o in only)


def all_names(workers: int) -> list[str]:
    """Every scenario name a run can record (for --only's check)."""
    extra = ["workers-1", f"workers-{workers}", "http-workers-1", f"http-workers-{workers}",
             "nats-connect"]  # benchmarks/nats.py, outside the h2load/wrk scenarios
    return [*SCENARIO_NAMES, *extra, *(f"{v}@max" for v in ENVOY_VARIANTS)]


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
