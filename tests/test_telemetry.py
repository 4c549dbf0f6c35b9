"""Metrics at /metrics across workers, and traces that continue the caller's trace."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from extauthz.telemetry import tracing
from extauthz.telemetry.metrics import Metrics, SharedMetrics
from tests.support.inproc import ServerThread
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.ports import free_port
from tests.support.requests import CHECK, bearer, check_request
from tests.support.settings import serving_settings
from tests.support.stack import ExtAuthz, Gateway, http_get
from tests.support.workers import one_per_worker

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def scrape(port: int) -> dict[str, list[Any]]:
    text = http_get(f"http://127.0.0.1:{port}/metrics").body.decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def total(samples: list[Any], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_decisions_in_every_worker_and_parse_as_prometheus(
    tmp_path: Path, issuer: LocalIssuer
) -> None:
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                                  "default_action": "authenticated"},
                       args=["--workers", "2"]).start()
    try:
        token = issuer.mint("ES256")
        workers = one_per_worker(service.grpc_port, token=token)
        for w in workers:
            for _ in range(3):
                assert w.ask(token)[1] == 200
            assert w.ask()[1] == 401
        time.sleep(2.2)  # each worker writes its snapshot every second
        for _ in range(4):  # whichever worker answers, the picture is whole
            fams = scrape(service.admin_port)  # /metrics is on the admin listener
            checks = fams["extauthz_checks"]
            assert {s.labels["worker"] for s in checks} == {"0", "1"}
            assert total(checks, "extauthz_checks_total", decision="allow", reason="allowed") >= 8
            assert total(checks, "extauthz_checks_total", decision="deny", reason="token_missing") == 2
            duration = fams["extauthz_check_duration_seconds"]
            assert total(duration, "extauthz_check_duration_seconds_count") >= 10
            assert any(s.labels.get("le") == "0.0005" for s in duration)
            assert total(fams["extauthz_token_cache_lookups"], "extauthz_token_cache_lookups_total",
                         result="hit") >= 6
            assert total(fams["extauthz_jwks_fetches"], "extauthz_jwks_fetches_total", result="ok") >= 2
            assert "extauthz_policy_snapshot_age_seconds" in fams
        for w in workers:
            w.channel.close()
    finally:
        service.stop()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter)
    yield exporter
    tracing.reset()


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=1"},
    {"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "1"},
    {"b3": f"{TRACE}-{PARENT}-1"},
])
def test_a_check_span_continues_the_callers_trace_and_holds_no_secret(
    spans: InMemorySpanExporter, issuer: LocalIssuer, headers: dict[str, str]
) -> None:
    settings = serving_settings(issuer)
    server = ServerThread(settings).start()
    token = issuer.mint("ES256")
    try:
        with grpc.insecure_channel(server.target) as channel:
            raw = channel.unary_unary(CHECK)(check_request(
                {**headers, "authorization": f"Bearer {token}", "cookie": "session=s3cr3t"},
                path="/orders?card=4111"), timeout=5)
        assert CheckResponse.parse(raw).status.code == 0
    finally:
        server.stop()
    finished = spans.get_finished_spans()
    check = next(s for s in finished if s.name == "extauthz.check")
    assert f"{check.context.trace_id:032x}" == TRACE
    assert check.parent is not None
    assert f"{check.parent.span_id:016x}" == PARENT
    attrs = dict(check.attributes or {})
    assert attrs["extauthz.decision"] == "allow"
    assert attrs["extauthz.reason"] == "allowed"
    assert attrs["url.path"] == "/orders"
    assert attrs["extauthz.issuer"] == issuer.issuer
    fetch = [s for s in finished if s.name == "extauthz.jwks.fetch"]
    assert fetch  # the key fetch at start is traced too
    everything = json.dumps([dict(s.attributes or {}) for s in finished])
    for secret in (token, "s3cr3t", "4111"):
        assert secret not in everything


def test_without_otel_settings_tracing_stays_off() -> None:
    assert not tracing.tracing_enabled({})
    assert not tracing.tracing_enabled({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.tracing_enabled({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert tracing.tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.active()


def test_through_a_real_envoy_the_span_has_the_clients_trace(tmp_path: Path, issuer: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                                  "default_action": "authenticated"},
                       env={"OTEL_TRACES_EXPORTER": "console"}).start()
    gateway = Gateway(tmp_path, service).start()
    try:
        r = gateway.get("/hello", {"authorization": f"Bearer {issuer.mint('ES256')}",
                                   "traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert r.status == 200
        process = service.process
        assert process is not None
        until(lambda: f'"trace_id": "0x{TRACE}"' in process.output(), 5, 0.1,
              what=lambda: process.output()[-2000:])
        out = process.output()
        block = out[out.index('"name": "extauthz.check"'):]
        assert f'"trace_id": "0x{TRACE}"' in block[:600]
        assert re.search(rf'"parent_id": "0x{PARENT}"', block[:900])
    finally:
        gateway.stop()
        service.stop()


class _Collector:
    """An OTLP/HTTP receiver on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[tuple[str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.received.append((self.path, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_otlp_export_sends_the_check_span_and_the_metrics(tmp_path: Path, issuer: LocalIssuer) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    collector = _Collector()
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                                  "default_action": "authenticated"},
                       env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                            "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    service.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            channel.unary_unary(CHECK)(check_request(bearer(issuer.mint("ES256"),
                                                            traceparent=f"00-{TRACE}-{PARENT}-01")),
                                       timeout=5)

        def exported() -> tuple[list[Any], set[str]] | None:
            """What the collector has received so far, once it holds the span and the metric."""
            spans: list[Any] = []
            metric_names: set[str] = set()
            for path, body in list(collector.received):
                if path == "/v1/traces":
                    req = ExportTraceServiceRequest.FromString(body)
                    spans += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
                elif path == "/v1/metrics":
                    req = ExportMetricsServiceRequest.FromString(body)
                    metric_names |= {m.name for rm in req.resource_metrics
                                     for sm in rm.scope_metrics for m in sm.metrics}
            return (spans, metric_names) if spans and "extauthz.checks" in metric_names else None

        spans, metric_names = until(exported, 10, 0.2,
                                    what=lambda: [p for p, _ in collector.received])
        check = next(s for s in spans if s.name == "extauthz.check")
        assert check.trace_id.hex() == TRACE
        assert check.parent_span_id.hex() == PARENT
        assert "extauthz.checks" in metric_names
    finally:
        service.stop()
        collector.close()


# --- /metrics through prometheus_client ------------------------------------------------

def _worker(directory: Path, worker: str) -> tuple[Metrics, SharedMetrics]:
    metrics = Metrics(worker=worker, environ={})
    return metrics, SharedMetrics(metrics, str(directory))


def test_each_worker_leaves_prometheus_client_multiprocess_files_that_any_worker_merges(
    tmp_path: Path,
) -> None:
    zero, shared_zero = _worker(tmp_path, "0")
    one, shared_one = _worker(tmp_path, "1")
    zero.checked(True, "allowed", 0.0003)
    for seconds in (0.0002, 0.004):
        one.checked(False, "token_missing", seconds)
    one.stepup.add(1, {"ceremony": "stepup", "outcome": "ok"})
    one.observe("extauthz.policy.snapshot.age", "age", lambda: [(2.5, {})], counter=False, unit="s")
    shared_one.write()  # what worker 1's loop does every second

    fams = {f.name: f.samples for f in text_string_to_metric_families(shared_zero.text())}
    checks = fams["extauthz_checks"]
    assert total(checks, "extauthz_checks_total", worker="0", reason="allowed") == 1
    assert total(checks, "extauthz_checks_total", worker="1", reason="token_missing") == 2
    duration = fams["extauthz_check_duration_seconds"]
    assert total(duration, "extauthz_check_duration_seconds_bucket", worker="1", le="0.00025") == 1
    assert total(duration, "extauthz_check_duration_seconds_bucket", worker="1", le="0.005") == 2
    assert total(duration, "extauthz_check_duration_seconds_count", worker="1") == 2
    assert total(duration, "extauthz_check_duration_seconds_sum", worker="1") == pytest.approx(0.0042)
    assert total(fams["extauthz_stepup_ceremonies"], "extauthz_stepup_ceremonies_total",
                 worker="1", outcome="ok") == 1
    assert total(fams["extauthz_policy_snapshot_age_seconds"],
                 "extauthz_policy_snapshot_age_seconds", worker="1") == 2.5
    # the files are prometheus_client's own multiprocess format: its collector reads them as is
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("extauthz_checks_total", {
        "decision": "deny", "reason": "token_missing", "worker": "1"}) == 2


def test_a_series_a_worker_stops_reporting_leaves_the_merged_view(tmp_path: Path) -> None:
    """Each write replaces a worker's files whole: a condition that cleared is not kept."""
    refused: list[tuple[float, dict[str, str]]] = [(1, {"data": "policies", "condition": "epoch_lost"})]
    _, shared_zero = _worker(tmp_path, "0")
    one, shared_one = _worker(tmp_path, "1")
    one.observe("extauthz.store.refused", "refused", lambda: list(refused), counter=False)
    shared_one.write()
    assert "extauthz_store_refused{" in shared_zero.text()
    refused.clear()
    shared_one.write()
    assert "extauthz_store_refused{" not in shared_zero.text()


def test_a_worker_that_stopped_writing_is_left_out_of_metrics(tmp_path: Path) -> None:
    _, shared_zero = _worker(tmp_path, "0")
    one, shared_one = _worker(tmp_path, "1")
    one.checked(True, "allowed", 0.001)
    shared_one.write()
    assert 'worker="1"' in shared_zero.text()
    old = time.time() - 11  # it wrote last 11 s ago: gone (crashed, or being restarted)
    for f in tmp_path.glob("*_1.db"):
        os.utime(f, (old, old))
    text = shared_zero.text()
    assert 'worker="1"' not in text
    assert 'worker="0"' in text


# Names and labels are what dashboards and alerts are written against.
DASHBOARD_SERIES = {
    "extauthz_checks": ("counter", {"decision", "reason", "worker"}),
    "extauthz_check_duration_seconds": ("histogram", {"worker", "le"}),
    "extauthz_token_cache_lookups": ("counter", {"result", "worker"}),
    "extauthz_jwks_fetches": ("counter", {"issuer", "result", "worker"}),
    "extauthz_store_errors": ("counter", {"data", "worker"}),
    "extauthz_store_loads": ("counter", {"data", "worker"}),
    "extauthz_policy_snapshot_age_seconds": ("gauge", {"worker"}),
    "extauthz_revocation_snapshot_age_seconds": ("gauge", {"worker"}),
    "extauthz_worker_start_time_seconds": ("gauge", {"worker"}),
    "extauthz_policy_snapshot_revision": ("gauge", {"revision", "worker"}),
    "extauthz_policies": ("gauge", {"worker"}),
    "extauthz_revocations": ("gauge", {"worker"}),
    "extauthz_demo_issuer_enabled": ("gauge", {"worker"}),
    "extauthz_http_connections": ("gauge", {"listener", "worker"}),
    "extauthz_http_refused": ("counter", {"listener", "worker"}),
    "extauthz_check_http_connections": ("gauge", {"worker"}),
    "extauthz_check_http_refused": ("counter", {"worker"}),
    # listed once they have a series: while something is refused, with Redis, after a ceremony,
    # after a dry-run denial
    "extauthz_store_refused": ("gauge", set()),
    "extauthz_store_redis_unsafe": ("gauge", set()),
    "extauthz_stepup_ceremonies": ("counter", set()),
    "extauthz_dry_run_denials": ("counter", set()),
}


def test_the_metric_names_and_labels_stay_as_dashboards_know_them(issuer: LocalIssuer) -> None:
    admin = free_port()
    settings = serving_settings(issuer, admin={"listen": f"127.0.0.1:{admin}"})
    server = ServerThread(settings).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            channel.unary_unary(CHECK)(check_request(bearer(issuer.mint("ES256"))), timeout=5)
        response = http_get(f"http://127.0.0.1:{admin}/metrics")
    finally:
        server.stop()
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    assert set(families) == {name for name, (_, labels) in DASHBOARD_SERIES.items() if labels}
    for name, family in families.items():
        kind, labels = DASHBOARD_SERIES[name]
        assert family.type == kind, name
        assert {k for s in family.samples for k in s.labels} == labels, name


def test_the_benchmark_counts_decisions_by_reason_over_every_worker(tmp_path: Path) -> None:
    from benchmarks.scenarios import decisions
    from benchmarks.stack import Instance

    zero, shared_zero = _worker(tmp_path, "0")
    one, shared_one = _worker(tmp_path, "1")
    for metrics in (zero, one):
        metrics.checked(True, "allowed", 0.0001)
    one.checked(False, "token_missing", 0.0001)
    shared_one.write()

    class Scraped(Instance):
        def __init__(self, text: str) -> None:
            self.text = text

        def metrics(self) -> str:
            return self.text

    assert decisions(Scraped(shared_zero.text())) == {"allowed": 2.0, "token_missing": 1.0}
