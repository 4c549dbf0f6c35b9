"""The same-run comparisons and their targets: every value is a ratio or a difference of
two scenarios measured in the same round, reported as the median over rounds (min-max).
A target is judged on the median; ``met`` is None where there is no target."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]  # scenario -> round -> run

# Through one Envoy worker: the authorizers compared with Envoy alone (name, what it is).
ENVOY_PATHS = (
    ("envoy-jwt", "Envoy jwt_authn (the peer)"),
    ("envoy-grpc", "extauthz over gRPC"),
    ("envoy-http", "extauthz over HTTP"),
    ("envoy-grpc-floor", "gRPC floor"),
    ("envoy-http-floor", "HTTP floor"),
)


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda v: v >= limit


class _Table:
    def __init__(self, outcomes: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.by_round: dict[str, dict[int, Mapping[str, Any]]] = {
            name: {r["round"]: r for r in runs} for name, runs in outcomes.items()
        }
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, metric: str, values: list[float], target: str | None = None,
            met: Callable[[float], bool] | None = None) -> None:
        if not values:
            return
        median = statistics.median(values)
        self.rows.append({
            "name": name,
            "metric": metric,
            "values": [round(v, 4) for v in values],
            "median": round(median, 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
            "target": target,
            "met": met(median) if met is not None else None,
        })

    def _pairs(self, a: str, b: str) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        ra, rb = self.by_round.get(a, {}), self.by_round.get(b, {})
        return [(ra[n], rb[n]) for n in sorted(ra) if n in rb]

    def ratio(self, a: str, b: str, scale: float = 1.0, key: str = "throughput") -> list[float]:
        return [x[key] / (y[key] * scale) for x, y in self._pairs(a, b)
                if x.get(key) is not None and y.get(key)]

    def latency_added(self, a: str, b: str, q: str) -> list[float]:
        return [x["latency_ms"][q] - y["latency_ms"][q] for x, y in self._pairs(a, b)
                if q in x["latency_ms"] and q in y["latency_ms"]]

    def per_core(self, a: str, b: str) -> list[float]:
        """(a's throughput per server core) / (b's)."""
        return [(x["throughput"] / x["server_cpu_cores"]) / (y["throughput"] / y["server_cpu_cores"])
                for x, y in self._pairs(a, b)
                if x["server_cpu_cores"] and y["server_cpu_cores"] and y["throughput"]]


def comparisons(outcomes: Mapping[str, Sequence[Mapping[str, Any]]], workers: int,
                rates: Sequence[int]) -> list[dict[str, Any]]:
    """``outcomes``: scenario name -> its runs (each with "round")."""
    t = _Table(outcomes)
    add = t.add
    # --- gRPC straight to the service ------------------------------------------------------------
    add("allow-cached / floor", "throughput ratio", t.ratio("allow-cached", "floor"), ">= 0.90",
        _at_least(0.90))
    add("allow-cached / floor", "CPU per check ratio (ours / floor's)",
        t.ratio("allow-cached", "floor", key="cpu_us_per_check"))
    for alg in ("rs256", "es256"):
        add(f"allow-verify-{alg} / floor", "throughput ratio", t.ratio(f"allow-verify-{alg}", "floor"),
            ">= 0.60", _at_least(0.60))
    add("policies-10k / allow-cached", "throughput ratio", t.ratio("policies-10k", "allow-cached"),
        ">= 0.95", _at_least(0.95))
    # --- plain HTTP straight to the service (issue 14) --------------------------------------------
    add("http-allow-cached / floor (gRPC)", "CPU per check ratio", t.ratio(
        "http-allow-cached", "floor", key="cpu_us_per_check"), "<= 0.25", _at_most(0.25))
    add("http-allow-cached / allow-cached (gRPC)", "throughput ratio",
        t.ratio("http-allow-cached", "allow-cached"), ">= 3.0", _at_least(3.0))
    add("http-allow-cached / allow-cached (gRPC)", "throughput per server core, ratio",
        t.per_core("http-allow-cached", "allow-cached"))
    add("http-allow-cached / http-floor", "throughput ratio", t.ratio("http-allow-cached", "http-floor"))
    add("http-allow-cached / http-floor", "CPU per check ratio (ours / floor's)",
        t.ratio("http-allow-cached", "http-floor", key="cpu_us_per_check"))
    add("http-floor / floor (gRPC)", "CPU per check ratio", t.ratio("http-floor", "floor",
                                                                     key="cpu_us_per_check"))
    for alg in ("rs256", "es256"):
        add(f"http-allow-verify-{alg} / allow-verify-{alg} (gRPC)", "throughput ratio",
            t.ratio(f"http-allow-verify-{alg}", f"allow-verify-{alg}"))
    # --- workers, both transports -------------------------------------------------------------
    if workers > 1:
        for prefix, transport in (("", "gRPC"), ("http-", "HTTP")):
            one, many = f"{prefix}workers-1", f"{prefix}workers-{workers}"
            add(f"{many} / ({workers} x {one})", f"scaling ({transport})",
                t.ratio(many, one, scale=workers), ">= 0.80", _at_least(0.80))
            add(f"{many} / {one} per CPU core used", f"throughput per server core, ratio ({transport})",
                t.per_core(many, one))
    # --- through one Envoy worker -------------------------------------------------------------
    add("envoy-http@max / envoy-jwt@max", "max throughput ratio", t.ratio("envoy-http@max", "envoy-jwt@max"),
        ">= 0.30", _at_least(0.30))
    add("envoy-grpc@max / envoy-jwt@max", "max throughput ratio", t.ratio("envoy-grpc@max", "envoy-jwt@max"))
    add("envoy-http@max / envoy-grpc@max", "max throughput ratio",
        t.ratio("envoy-http@max", "envoy-grpc@max"))
    for rate in rates:
        for variant, _ in ENVOY_PATHS:
            for q in ("mean", "p99"):
                target: str | None = None
                met: Callable[[float], bool] | None = None
                if rate == 1000 and variant == "envoy-http":
                    limit = 1.0 if q == "mean" else 2.0
                    target, met = f"<= {limit:g} ms", _at_most(limit)
                add(f"{variant} @{rate}/s: added {q}", "ms vs envoy-only",
                    t.latency_added(f"{variant}@{rate}", f"envoy-only@{rate}", q), target, met)
    return t.rows


def added_latency(outcomes: Mapping[str, Sequence[Mapping[str, Any]]], variant: str, rate: int,
                  q: str) -> list[float]:
    """Per round: ``variant``'s latency ``q`` at ``rate`` minus Envoy alone's (ms)."""
    return _Table(outcomes).latency_added(f"{variant}@{rate}", f"envoy-only@{rate}", q)
