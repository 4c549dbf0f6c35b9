"""Metrics through the OpenTelemetry API, exposed as Prometheus text at GET /metrics.

Counters that already exist as plain integers (token cache, JWKS fetches, store errors)
are read by observable instruments at scrape time, so they cost nothing per request.
With several worker processes each writes a snapshot of its series (labelled
``worker``) to a shared directory every second; whichever worker answers the scrape
merges them, so /metrics gives the whole picture whatever connection it arrives on.
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

# Fine enough for sub-millisecond checks, wide enough for a JWKS fetch on a cache miss.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DURATION_HELP = "Time to answer a Check"
STALE_SNAPSHOT = 10.0  # seconds: a worker that stopped writing is left out of /metrics

Family = dict[str, Any]  # {"name", "type", "help", "samples": [[suffix, labels, value], ...]}
ObserveFn = Callable[[], Iterable[tuple[float, Mapping[str, str]]]]


def otlp_metrics_enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_METRICS_EXPORTER", "")
    return exporter == "otlp" or (exporter == "" and bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")))


class Metrics:
    def __init__(self, worker: str = "0", environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.worker = worker
        self._reader = InMemoryMetricReader(preferred_temporality={
            Counter: AggregationTemporality.CUMULATIVE, Histogram: AggregationTemporality.CUMULATIVE,
            ObservableCounter: AggregationTemporality.CUMULATIVE})
        readers: list[MetricReader] = [self._reader]
        if otlp_metrics_enabled(environ):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        self._provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": "extauthz", "service.instance.id": worker}),
            views=[View(instrument_name="extauthz.check.duration",
                        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS))])
        self._meter = self._provider.get_meter("extauthz")
        # The two per-Check series are plain integers on the hot path (an OTel add and
        # record cost ~15 µs a check, a tenth of the gRPC floor); the counter is read at
        # scrape time and the histogram is rendered from our own buckets.
        self._counts: dict[tuple[bool, str], int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._duration_sum = 0.0
        self._meter.create_observable_counter(
            "extauthz.checks", callbacks=[self._observe_checks],
            description="Check decisions by decision and reason code")
        # OTLP has no observable histogram: only when it is exported do checks pay for one.
        self._otlp_duration = self._meter.create_histogram(
            "extauthz.check.duration", unit="s", description=DURATION_HELP) if len(readers) > 1 else None
        self.stepup = self._meter.create_counter(
            "extauthz.stepup.ceremonies", description="Step-up ceremonies by ceremony and outcome")
        self.dry_run = self._meter.create_counter(
            "extauthz.dry_run.denials",
            description="Requests a dry-run policy would deny (it never decides them)")

    def observe(self, name: str, description: str, fn: ObserveFn, *, counter: bool,
                unit: str = "") -> None:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, dict(attrs)) for value, attrs in fn()]
        create = (self._meter.create_observable_counter if counter
                  else self._meter.create_observable_gauge)
        create(name, callbacks=[callback], description=description, unit=unit)

    def checked(self, allowed: bool, reason: str, seconds: float) -> None:
        """Hot path: two integer increments and a bisect."""
        key = (allowed, reason)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._duration_sum += seconds
        if self._otlp_duration is not None:
            self._otlp_duration.record(seconds)

    def _observe_checks(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"decision": "allow" if allowed else "deny", "reason": str(reason)})
                for (allowed, reason), n in list(self._counts.items())]

    def _duration_family(self) -> Family:
        labels = {"worker": self.worker}
        samples: list[list[Any]] = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, self._buckets, strict=False):
            running += count
            samples.append(["_bucket", {**labels, "le": repr(float(bound))}, running])
        total = running + self._buckets[-1]
        samples.append(["_bucket", {**labels, "le": "+Inf"}, total])
        samples.append(["_sum", labels, self._duration_sum])
        samples.append(["_count", labels, total])
        return {"name": "extauthz_check_duration_seconds", "type": "histogram",
                "help": DURATION_HELP, "samples": samples}

    # --- Prometheus text -------------------------------------------------------------
    def families(self) -> list[Family]:
        data = self._reader.get_metrics_data()
        out: list[Family] = [self._duration_family()]
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != "extauthz.check.duration":  # ours above; OTel's is for OTLP
                        out.append(self._family(m))
        return out

    def _family(self, m: Any) -> Family:
        name = m.name.replace(".", "_")
        if m.unit == "s" and not name.endswith("_seconds"):
            name += "_seconds"
        samples: list[list[Any]] = []
        agg = m.data
        if isinstance(agg, Sum) and agg.is_monotonic:
            kind = "counter"
            name += "_total"  # text format 0.0.4: the TYPE line names the sample, _total included
            for dp in agg.data_points:
                samples.append(["", {**self._labels(dp)}, dp.value])
        else:  # gauges; the one histogram (check duration) is rendered by _duration_family
            kind = "gauge"
            for dp in agg.data_points:
                assert isinstance(dp, NumberDataPoint)
                samples.append(["", self._labels(dp), dp.value])
        return {"name": name, "type": kind, "help": m.description or m.name, "samples": samples}

    def _labels(self, dp: Any) -> dict[str, str]:
        return {**{k: str(v) for k, v in (dp.attributes or {}).items()}, "worker": self.worker}

    def shutdown(self) -> None:
        self._provider.shutdown()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4; families of the same name (one per worker) merged."""
    merged: dict[str, Family] = {}
    for fam in families:
        into = merged.setdefault(fam["name"], {**fam, "samples": []})
        into["samples"].extend(fam["samples"])
    lines: list[str] = []
    for name in sorted(merged):
        fam = merged[name]
        lines.append(f"# HELP {name} {_escape(fam['help'])}")
        lines.append(f"# TYPE {name} {fam['type']}")
        for suffix, labels, value in fam["samples"]:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{suffix}{{{text}}} {float(value)!r}")
    return "\n".join(lines) + "\n"


class SharedMetrics:
    """Per-worker snapshots in a directory, so any worker can answer for all of them."""

    def __init__(self, metrics: Metrics, directory: str | None) -> None:
        self.metrics = metrics
        self.dir = Path(directory) if directory else None

    def write(self) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / f"worker-{self.metrics.worker}.json"
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.metrics.families()))
        os.replace(tmp, target)

    def text(self) -> str:
        families = self.metrics.families()
        if self.dir is not None and self.dir.is_dir():
            now = time.time()
            for f in self.dir.glob("worker-*.json"):
                if f.name == f"worker-{self.metrics.worker}.json":
                    continue
                try:
                    if now - f.stat().st_mtime > STALE_SNAPSHOT:
                        continue
                    families += json.loads(f.read_text())
                except (OSError, ValueError):
                    continue  # a snapshot being replaced or gone: the next scrape has it
        return render(families)
