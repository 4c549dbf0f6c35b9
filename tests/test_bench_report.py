"""benchmarks.report: Markdown, PNG and JSON from a synthetic results dict (nothing is timed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from benchmarks import report


def _stat(median: float, low: float, high: float) -> dict[str, float]:
    return {"median": median, "min": low, "max": high}


def _scenario(name: str, group: str, throughput: float, p50: float, *, rate: float | None = None,
              spread: float = 0.05) -> dict[str, Any]:
    latency = {"mean": p50 * 1.25, "p50": p50, "p90": p50 * 1.3, "p99": p50 * 2.0, "p999": p50 * 3.2}
    runs = [{"round": r, "requests": int(throughput * 5), "errors": 0, "seconds": 5.0,
             "throughput": throughput, "latency_ms": latency, "server_cpu_cores": 0.98,
             "client_cpu_cores": 0.3, "rate": rate} for r in (1, 2, 3)]
    summary: dict[str, Any] = {
        "throughput": _stat(throughput, throughput * (1 - spread), throughput * (1 + spread)),
        **{key: _stat(value, value * 0.9, value * 1.1) for key, value in latency.items()},
        "server_cpu_cores": _stat(0.98, 0.95, 1.0), "errors": 0, "requests": int(throughput * 15),
        "cpu_us_per_check": _stat(0.98e6 / throughput, 0.95e6 / throughput, 1e6 / throughput),
    }
    return {"name": name, "group": group, "description": f"{name} scenario", "runs": runs, "summary": summary}


def _results() -> dict[str, Any]:
    floor = _scenario("floor", "grpc", 4870.2, 3.1)
    floor["summary"]["throughput"] = _stat(4870.2, 4700.0, 4950.1)
    broken = {"name": "deny-broken", "group": "grpc", "description": "failed to start", "runs": []}
    scenarios = [
        floor,
        _scenario("allow-cached", "grpc", 4430.0, 3.4),
        broken,
        *(_scenario(f"{series}@{rate}", "envoy", rate * 0.999, p50, rate=rate)
          for series, base in (("envoy-e2e", 1.2), ("envoy-only", 0.7))
          for rate, p50 in ((500, base), (1000, base * 1.1), (2000, base * 1.5))),
        *(_scenario(f"workers-{n}", "workers", 4800.0 * n * 0.9, 3.0) for n in (1, 2, 4)),
    ]
    comparisons = [
        {"name": "allow-cached / floor", "metric": "throughput ratio", "values": [0.91, 0.93, 0.89],
         "median": 0.91, "min": 0.89, "max": 0.93, "target": ">= 0.90", "met": True},
        {"name": "envoy-e2e @1000/s: added p99", "metric": "ms", "values": [1.4, 1.7, 1.5],
         "median": 1.5, "min": 1.4, "max": 1.7, "target": "<= 1.0", "met": False},
        {"name": "workers-4 / workers-1", "metric": "throughput ratio", "values": [3.5, 3.6, 3.4],
         "median": 3.5, "min": 3.4, "max": 3.6, "target": None, "met": None},
    ]
    soak = {"seconds": 120, "tokens": 10000, "rate": 800,
            "samples": [{"t": 0.0, "rss_mb": {"worker-1": 61.2, "worker-2": 60.8}},
                        {"t": 60.0, "rss_mb": {"worker-1": 62.5, "worker-2": 61.5}},
                        {"t": 120.0, "rss_mb": {"worker-1": 63.1, "worker-2": 62.0}}],
            "change": {"worker-1": 0.031, "worker-2": 0.02}, "target": "within ±10%", "met": True}
    return {
        "schema": 1, "when": "2026-11-23T21:00:00Z", "target": None,
        "machine": {"cpu": "Intel Xeon Test", "cores": "2", "python": "3.11.7", "grpcio": "1.85.1",
                    "envoy": "1.40.0", "kernel": "6.1.0-test"},
        "settings": {"rounds": 3, "seconds": 5.0, "connections": 4, "streams": 16, "workers": 2},
        "scenarios": scenarios, "comparisons": comparisons, "soak": soak,
    }


def _empty() -> dict[str, Any]:
    return {"schema": 1, "when": "2026-11-23T21:00:00Z", "target": None, "machine": {}, "settings": {},
            "scenarios": [], "comparisons": [], "soak": None}


def test_markdown_has_every_scenario_and_formatted_values() -> None:
    results = _results()
    text = report.markdown(results)
    assert text.startswith("## extauthz benchmark\n")
    for scenario in results["scenarios"]:
        assert scenario["name"] in text
    assert "| floor | 4870 (4700\u20134950) | 3.88 | 3.10 | 4.03 | 6.20 | 9.92 | 0 | 0.98 | 201 |" in text
    assert "| deny-broken | — | — | — | — | — | — | — | — | — |" in text
    assert "cpu Intel Xeon Test" in text
    assert "kernel 6.1.0-test" in text
    assert "rounds=3, seconds=5.0, connections=4, streams=16, workers=2" in text


def test_markdown_comparisons_and_soak() -> None:
    text = report.markdown(_results())
    assert "| allow-cached / floor | throughput ratio | 0.91 (0.89\u20130.93) | >= 0.90 | yes |" in text
    assert "| envoy-e2e @1000/s: added p99 | ms | 1.50 (1.40\u20131.70) | <= 1.0 | **no** |" in text
    assert "| workers-4 / workers-1 | throughput ratio | 3.50 (3.40\u20133.60) | — | — |" in text
    assert ("RSS over a 120 s soak at 800 req/s with 10000 rotating tokens: "
            "worker-1 61.2→63.1 MB (+3.1%), worker-2 60.8→62.0 MB (+2.0%); target within ±10%: yes") in text


def test_markdown_is_pure_and_deterministic() -> None:
    results = _results()
    before = copy.deepcopy(results)
    assert report.markdown(results) == report.markdown(results)
    assert results == before


def test_markdown_names_a_remote_target() -> None:
    results = _results()
    results["target"] = "10.0.0.7:9001"
    assert "10.0.0.7:9001" in report.markdown(results)


def test_write_reports_writes_three_files(tmp_path: Path) -> None:
    results = _results()
    paths = report.write_reports(results, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "png"}
    assert paths == {"json": tmp_path / "out" / "bench.json", "markdown": tmp_path / "out" / "bench.md",
                     "png": tmp_path / "out" / "bench.png"}
    assert all(path.is_file() for path in paths.values())
    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG")
    assert len(png) > 5 * 1024
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == results
    assert paths["markdown"].read_text(encoding="utf-8") == report.markdown(results)
    assert plt.get_fignums() == []


def test_empty_results_still_report(tmp_path: Path) -> None:
    results = _empty()
    text = report.markdown(results)
    assert "## extauthz benchmark" in text
    assert "Soak" not in text
    paths = report.write_reports(results, tmp_path, stem="empty")
    assert paths["png"] == tmp_path / "empty.png"
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == results
    assert plt.get_fignums() == []


def test_sparse_results_do_not_raise(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "scenarios": [{"name": "envoy-e2e@1000", "group": "envoy", "summary": {"p50": None, "p99": {}}},
                      {"name": "workers-x", "group": "workers", "summary": {"throughput": None}},
                      {"group": "grpc", "summary": {"p50": {"median": 2.0}}}],
        "comparisons": [{"name": "partial"}],
        "soak": {"samples": [], "met": None},
    }
    text = report.markdown(results)
    assert "| partial | — | — | — | — |" in text
    assert "RSS over a — s soak" in text
    assert report.chart(results, tmp_path / "sparse.png").read_bytes().startswith(b"\x89PNG")


def _issue14_results() -> dict[str, Any]:
    """The leading comparison's scenarios: each Envoy path at 1,000 req/s and at saturation,
    and each transport straight to the service."""
    results = _results()
    for name, top, cpu in (("envoy-only", 30000.0, 30.0), ("envoy-jwt", 26000.0, 38.0),
                           ("envoy-grpc", 2300.0, 420.0), ("envoy-http", 11000.0, 90.0),
                           ("envoy-grpc-floor", 2200.0, 400.0), ("envoy-http-floor", 12500.0, 70.0)):
        at_max = _scenario(f"{name}@max", "envoy-max", top, 2.0)
        at_max["summary"]["cpu_us_per_check"] = _stat(cpu, cpu, cpu)
        at_max["summary"]["authorizer_cpu_us_per_check"] = (
            None if name in ("envoy-only", "envoy-jwt") else _stat(cpu / 2, cpu / 2, cpu / 2))
        results["scenarios"] += [_scenario(f"{name}@1000", "envoy", 1000.0, 0.5, rate=1000), at_max]
    # (envoy-only@1000 is _results()'s own: it comes first)
    results["scenarios"] += [_scenario("http-floor", "http", 40000.0, 0.4),
                             _scenario("http-allow-cached", "http", 15000.0, 1.0),
                             *(_scenario(f"http-workers-{n}", "http-workers", 12000.0 * n, 2.0)
                               for n in (1, 2))]
    results["comparisons"] += [
        {"name": "envoy-http @1000/s: added mean", "metric": "ms vs envoy-only", "median": 0.41, "min": 0.3,
         "max": 0.5, "target": "<= 1 ms", "met": True},
        {"name": "envoy-jwt @1000/s: added p99", "metric": "ms vs envoy-only", "median": 0.12, "min": 0.1,
         "max": 0.2, "target": None, "met": None},
    ]
    results["soak_http"] = {**results["soak"], "transport": "http"}
    return results


def test_the_comparison_leads_with_the_peer_both_transports_and_the_floors() -> None:
    text = report.markdown(_issue14_results())
    assert text.index("### The comparison") < text.index("### Scenarios")
    assert ("| Envoy → extauthz over HTTP (cached allow) | 0.41 (0.30\u20130.50) | — | "
            "11000 (10450\u201311550) | 90 | 45 |") in text
    assert ("| Envoy `jwt_authn` (the in-proxy peer: same keys, same token) | — | "
            "0.12 (0.10\u20130.20) |") in text
    assert "| Envoy alone (ext_authz off) | (0.96 itself) | (1.54 itself) | 30000" in text
    assert "| extauthz over HTTP, cached allow | 15000 (14250\u201315750) | 1.25 | 2.00 | 65 |" in text
    assert "RSS over a 120 s soak over HTTP at 800 req/s" in text


def test_the_readme_gets_the_latest_run_between_its_markers_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before, after = "# Project\n\n## Performance\n\nProse above.\n\n", "\n\nProse below.\n"
    readme.write_text(f"{before}{report.README_BEGIN}\nold table\n{report.README_END}{after}")
    results = _issue14_results()
    assert report.update_readme(results, readme)
    text = readme.read_text()
    assert text.startswith(before + report.README_BEGIN)
    assert text.endswith(report.README_END + after)
    assert "old table" not in text
    assert "Latest run: 2026-11-23T21:00:00Z (cpu Intel Xeon Test, cores 2" in text
    assert "| Envoy → extauthz over gRPC (cached allow) |" in text
    assert ("| envoy-http @1000/s: added mean | ms vs envoy-only | 0.41 (0.30\u20130.50) | <= 1 ms | "
            "yes |") in text
    assert "envoy-jwt @1000/s: added p99" not in text  # the targets list only has rows with a target
    assert report.update_readme(results, readme)  # idempotent
    assert readme.read_text() == text
    readme.write_text("no markers\n")
    assert not report.update_readme(results, readme)
    assert readme.read_text() == "no markers\n"


def test_the_chart_has_the_peer_and_the_http_transport(tmp_path: Path) -> None:
    png = report.chart(_issue14_results(), tmp_path / "issue14.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert plt.get_fignums() == []
