"""Metrics: plain counters in each worker, exposed by ``prometheus_client`` at GET /metrics.

The per-check series are plain integers (a dict increment and a bisected bucket array);
everything else is read from the state it describes (``observe``). A prometheus_client
collector reads them all at scrape time, so the hot path pays nothing for the rest.

With ``--workers N`` each worker writes its series once a second (and before it answers a
scrape) into prometheus_client's multiprocess files, one set per worker in the shared
directory, replaced whole; whichever worker a scrape reaches merges them with
``MultiProcessCollector``, so /metrics gives the whole picture whatever connection it
arrives on. Every series carries a ``worker`` label.

OTLP export (when the OTEL_* variables ask for it) reads the same values through the
OpenTelemetry SDK, which is not started otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Observation

log = logging.getLogger("extauthz.metrics")

# Fine enough for sub-millisecond checks, wide enough for a JWKS fetch on a cache miss.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DURATION_HELP = "Time to answer a Check"
STALE_SNAPSHOT = 10.0  # seconds: a worker that stopped writing is left out of /metrics

Reading = tuple[float, Mapping[str, str]]  # a value and its labels
ObserveFn = Callable[[], Iterable[Reading]]


def otlp_metrics_enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_METRICS_EXPORTER", "")
    return exporter == "otlp" or (exporter == "" and bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")))


class LabelledCounter:
    """Events counted by label set in a dict of plain integers, read at scrape time."""

    def __init__(self) -> None:
        self._counts: dict[tuple[tuple[str, str], ...], int] = {}

    def add(self, amount: int, attributes: Mapping[str, str]) -> None:
        key = tuple(sorted(attributes.items()))
        self._counts[key] = self._counts.get(key, 0) + amount

    def readings(self) -> list[Reading]:
        return [(n, dict(key)) for key, n in list(self._counts.items())]


@dataclass(frozen=True)
class _Observed:
    """A series read at scrape time. ``name`` is the OTel name (``extauthz.store.loads``);
    the Prometheus one follows from it (``extauthz_store_loads_total``)."""

    name: str
    description: str
    fn: ObserveFn
    counter: bool
    unit: str

    def family(self, worker: str) -> Metric:
        name = self.name.replace(".", "_")
        if self.unit == "s" and not name.endswith("_seconds"):
            name += "_seconds"
        readings = list(self.fn())
        labels = [*readings[0][1], "worker"] if readings else ["worker"]
        family = (CounterMetricFamily(name, self.description, labels=labels) if self.counter
                  else GaugeMetricFamily(name, self.description, labels=labels))
        for value, attrs in readings:
            family.add_metric([*(str(attrs[k]) for k in labels[:-1]), worker], float(value))
        return family


class Metrics:
    """One worker's series; a prometheus_client collector (``collect``)."""

    def __init__(self, worker: str = "0", environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.worker = worker
        # The two per-Check series are plain integers on the hot path (an OTel add and
        # record cost ~15 µs a check, a tenth of the gRPC floor).
        self._counts: dict[tuple[bool, str], int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._duration_sum = 0.0
        self._observed: list[_Observed] = []
        self._otlp = _Otlp(worker) if otlp_metrics_enabled(environ) else None
        # OTLP has no observable histogram: only when it is exported do checks pay for one.
        self._otlp_duration = self._otlp.duration if self._otlp is not None else None
        self.stepup = LabelledCounter()
        self.dry_run = LabelledCounter()
        # Whole families a part builds itself (the NATS callout's histogram), by worker label.
        self.families: list[Callable[[str], Iterable[Metric]]] = []
        self.observe("extauthz.checks", "Check decisions by decision and reason code",
                     self._check_readings, counter=True)
        self.observe("extauthz.stepup.ceremonies", "Step-up ceremonies by ceremony and outcome",
                     self.stepup.readings, counter=True)
        self.observe("extauthz.dry_run.denials",
                     "Requests a dry-run policy would deny (it never decides them)",
                     self.dry_run.readings, counter=True)
        started = time.time()  # a new value for the same worker label: it was restarted
        self.observe("extauthz.worker.start_time", "Unix time this worker process started",
                     lambda: [(started, {})], counter=False, unit="s")

    def observe(self, name: str, description: str, fn: ObserveFn, *, counter: bool,
                unit: str = "") -> None:
        observed = _Observed(name, description, fn, counter, unit)
        self._observed.append(observed)
        if self._otlp is not None:
            self._otlp.observe(observed)

    def checked(self, allowed: bool, reason: str, seconds: float) -> None:
        """Hot path: two integer increments and a bisect."""
        key = (allowed, reason)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._duration_sum += seconds
        if self._otlp_duration is not None:
            self._otlp_duration.record(seconds)

    def _check_readings(self) -> list[Reading]:
        return [(n, {"decision": "allow" if allowed else "deny", "reason": str(reason)})
                for (allowed, reason), n in list(self._counts.items())]

    def collect(self) -> Iterator[Metric]:
        duration = HistogramMetricFamily("extauthz_check_duration_seconds", DURATION_HELP,
                                         labels=["worker"])
        buckets, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), list(self._buckets), strict=True):
            running += count
            buckets.append((floatToGoString(bound), float(running)))
        duration.add_metric([self.worker], buckets, self._duration_sum)
        yield duration
        for observed in self._observed:
            try:
                family = observed.family(self.worker)
            except Exception:  # a broken reading loses its own series, never the whole scrape
                log.exception("metrics: cannot read %s", observed.name)
                continue
            if family.samples:  # as in a merged scrape: a family with no series is not listed
                yield family
        for families in self.families:
            yield from families(self.worker)

    def shutdown(self) -> None:
        if self._otlp is not None:
            self._otlp.shutdown()


class _Otlp:
    """The OpenTelemetry SDK exporting the same readings over OTLP."""

    def __init__(self, worker: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource

        self._provider = MeterProvider(
            metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
            resource=Resource.create({"service.name": "extauthz", "service.instance.id": worker}),
            views=[View(instrument_name="extauthz.check.duration",
                        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS))])
        self._meter = self._provider.get_meter("extauthz")
        self.duration: Histogram = self._meter.create_histogram(
            "extauthz.check.duration", unit="s", description=DURATION_HELP)

    def observe(self, observed: _Observed) -> None:
        from opentelemetry.metrics import Observation

        def callback(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, dict(attrs)) for value, attrs in observed.fn()]
        create = (self._meter.create_observable_counter if observed.counter
                  else self._meter.create_observable_gauge)
        create(observed.name, callbacks=[callback], description=observed.description,
               unit=observed.unit)

    def shutdown(self) -> None:
        self._provider.shutdown()


# prometheus_client's multiprocess files: "<type>_<id>.db"; a gauge's type names how its
# values merge ("sum": one series per label set, and ours differ by worker).
_FILE_KINDS = {"counter": "counter", "gauge": "gauge_sum", "histogram": "histogram"}
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9-]")


def _file_samples(family: Metric) -> Iterator[tuple[str, dict[str, str], float]]:
    """A family's samples as the multiprocess files hold them: counters and gauges as they
    are, a histogram's buckets per bucket (the merge adds them up again) with its sum."""
    if family.type != "histogram":
        yield from ((s.name, s.labels, s.value) for s in family.samples)
        return
    below: dict[tuple[tuple[str, str], ...], float] = {}
    for s in family.samples:
        if s.name.endswith("_bucket"):
            series = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            yield s.name, s.labels, s.value - below.get(series, 0.0)
            below[series] = s.value
        elif s.name.endswith("_sum"):
            yield s.name, s.labels, s.value


def _fresh(directory: Path) -> list[str]:
    """The workers' files written in the last ``STALE_SNAPSHOT`` seconds."""
    now, fresh = time.time(), []
    for f in directory.glob("*.db"):
        try:
            if now - f.stat().st_mtime <= STALE_SNAPSHOT:
                fresh.append(str(f))
        except OSError:
            continue  # gone meanwhile
    return fresh


class SharedMetrics:
    """The metrics of every worker: each leaves its own in a shared directory, and any one
    answers a scrape for all of them. Without a directory (one worker) only its own."""

    def __init__(self, metrics: Metrics, directory: str | None) -> None:
        self.metrics = metrics
        self.dir = Path(directory) if directory else None
        self._lock = threading.Lock()  # the periodic write and a scrape's run in threads
        self._id = _UNSAFE_ID.sub("-", metrics.worker) or "0"

    def write(self) -> None:
        """Replace this worker's files with its series now (each file whole, atomically)."""
        if self.dir is None:
            return
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            files: dict[str, MmapedDict] = {}
            suffix = f".{os.getpid()}.tmp"  # not "*.db": a merge never reads a file half written
            try:
                for family in self.metrics.collect():
                    kind = _FILE_KINDS.get(family.type)
                    if kind is None:
                        continue
                    db = files.get(kind)
                    if db is None:
                        path = self.dir / f"{kind}_{self._id}.db{suffix}"
                        path.unlink(missing_ok=True)  # one a failed write left would keep its keys
                        db = files[kind] = MmapedDict(str(path))
                    for name, labels, value in _file_samples(family):
                        key = mmap_key(family.name, name, list(labels), list(labels.values()),
                                       family.documentation)
                        db.write_value(key, value, 0.0)
            finally:
                for db in files.values():
                    db.close()
            for kind in _FILE_KINDS.values():
                target = self.dir / f"{kind}_{self._id}.db"
                if kind in files:
                    os.replace(target.with_name(target.name + suffix), target)
                else:  # no series of this type now: none left from before either
                    target.unlink(missing_ok=True)

    def collect(self) -> Iterable[Metric]:
        if self.dir is None:
            return self.metrics.collect()
        self.write()
        for _ in range(3):
            try:
                merged: Iterable[Metric] = MultiProcessCollector.merge(_fresh(self.dir), accumulate=True)
            except FileNotFoundError:
                continue  # a worker removed a file it no longer needs meanwhile: read again
            return merged
        return self.metrics.collect()  # files coming and going all along: this worker alone

    def text(self) -> str:
        """Prometheus text format 0.0.4."""
        return generate_latest(self).decode()
