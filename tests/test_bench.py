"""The benchmark cannot rot: a short real run of every scenario (no assertions on speed),
its request bodies read back by an independent decoder, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from envoy_data_plane.envoy.service.auth.v3 import CheckRequest

from benchmarks.checks import check_request, grpc_frame
from benchmarks.issuer import BenchIssuer
from benchmarks.load import percentiles
from benchmarks.scenarios import ENVOY_VARIANTS, SCENARIO_NAMES
from tests.support.cli import INSTALLED, run_cli
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[1]


def test_check_bodies_are_realistic_and_decode_independently() -> None:
    issuer = BenchIssuer(port=0)
    token = issuer.mint("RS256")
    assert 780 <= len(token) <= 820
    assert 780 <= len(issuer.mint("ES256")) <= 820
    framed = grpc_frame(check_request(host="svc.bench.local", path="/a?b=1", token=token).SerializeToString())
    assert framed[0] == 0
    assert int.from_bytes(framed[1:5], "big") == len(framed) - 5
    parsed = CheckRequest.parse(framed[5:])
    http = parsed.attributes.request.http
    assert len(http.headers) == 11  # ten request headers and the bearer token
    assert http.headers["authorization"] == f"Bearer {token}"
    assert (http.host, http.path, http.method) == ("svc.bench.local", "/a?b=1", "GET")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]  # microseconds
    assert percentiles(values) == {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
    assert percentiles([]) == {}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(None, *args, program=(sys.executable, "-m", "benchmarks"), cwd=REPO, timeout=600)


def test_a_bad_argument_is_one_line_naming_the_fix() -> None:
    done = _bench("--only", "allow-chached")
    assert done.returncode == 2
    assert "no scenario named allow-chached; choose from floor, allow-cached" in done.stderr
    assert "Traceback" not in done.stderr
    done = _bench("--rates", "fast")
    assert done.returncode == 2
    assert "give req/s numbers like 500,1000,2000" in done.stderr


def test_extauthz_bench_is_the_checkouts_benchmark_from_any_directory(tmp_path: Path) -> None:
    """An editable install hands ``extauthz bench`` to ``python -m benchmarks`` of its checkout
    (the package never imports it; an installed wheel says it has none: test_image_recipe)."""
    done = run_cli(None, "bench", "--only", "allow-chached", program=INSTALLED, cwd=tmp_path)
    assert done.returncode == 2
    assert "no scenario named allow-chached; choose from floor, allow-cached" in done.stderr
    assert "run the latency benchmark" in run_cli(None, "--help", program=INSTALLED).stdout


def test_a_short_run_of_every_scenario_writes_the_reports(tmp_path: Path) -> None:
    done = _bench("--quick", "--seconds", "1", "--rates", "200", "--soak-seconds", "3",
                  "--soak-tokens", "200", "--workers", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    names = {s["name"] for s in results["scenarios"]}
    direct = {n for n in SCENARIO_NAMES
              if n not in ("workers", "http-workers", "soak", "soak-http") and n not in ENVOY_VARIANTS}
    envoy = {f"{v}@{at}" for v in ENVOY_VARIANTS for at in ("200", "max")}
    assert direct | {"workers-1", "workers-2", "http-workers-1", "http-workers-2"} | envoy == names
    for s in results["scenarios"]:
        assert s["summary"]["requests"] > 0, s["name"]
        assert s["summary"]["errors"] == 0, s["name"]  # every answer was the expected decision
        assert s["summary"]["cpu_us_per_check"]["median"] > 0, s["name"]  # server CPU for every scenario
    compared = {c["name"]: c for c in results["comparisons"]}
    assert set(compared) >= {"allow-cached / floor", "policies-10k / allow-cached",
                             "http-allow-cached / floor (gRPC)", "http-allow-cached / allow-cached (gRPC)",
                             "envoy-http@max / envoy-jwt@max", "envoy-http @200/s: added mean",
                             "envoy-jwt @200/s: added p99", "http-workers-2 / (2 x http-workers-1)"}
    # every target is judged, whatever the speed
    assert all(c["met"] in (True, False) for c in compared.values() if c["target"])
    for key in ("soak", "soak_http"):
        assert results[key]["samples"]
        assert results[key]["errors"] == 0
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "bench.md").read_text()
    assert "| allow-cached |" in report
    assert "| http-allow-cached |" in report
    assert "| Envoy `jwt_authn` (the in-proxy peer: same keys, same token) |" in report
    assert "allow-cached / floor" in done.stdout  # the table is printed too


def test_a_running_deployment_is_loaded_with_target(tmp_path: Path) -> None:
    from tests.support.issuer import AUDIENCE, LocalIssuer
    from tests.support.stack import ExtAuthz

    idp = LocalIssuer()
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                                  "default_action": "authenticated"}).start()
    try:
        target = f"127.0.0.1:{service.grpc_port}"
        done = _bench("--target", target, "--token", idp.mint("ES256"), "--host", "api.example.com",
                      "--path", "/x", "--quick", "--seconds", "1", "--out", str(tmp_path / "out"))
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((tmp_path / "out" / "bench.json").read_text())
        assert results["target"] == target
        assert [s["name"] for s in results["scenarios"]] == ["allow", "deny-missing", "deny-bad-signature"]
        assert all(s["summary"]["requests"] > 0 for s in results["scenarios"])
        assert all(s["summary"]["server_cpu_cores"] is None for s in results["scenarios"])  # not ours to see
        # a token the target refuses is named as the problem, before any load
        done = _bench("--target", target, "--token", idp.mint("ES256", aud="other"), "--quick")
        assert done.returncode == 1
        assert "allow: the target answered gRPC code 16, expected 0 (is --token valid" in done.stderr
    finally:
        service.stop()


def test_each_h2load_run_reads_only_its_own_latencies(tmp_path: Path) -> None:
    """h2load appends to --log-file: a second round must not see the first one's requests."""
    from benchmarks.load import grpc_url, h2load
    from demo.processes import Process

    port = free_port()
    floor = Process("floor", [sys.executable, "-m", "benchmarks.floor", "--listen", f"127.0.0.1:{port}"],
                    tmp_path / "floor.log").start()
    body = tmp_path / "body.bin"
    body.write_bytes(grpc_frame(check_request(host="h", path="/", token=None).SerializeToString()))
    try:
        from benchmarks.stack import _grpc_up, _wait

        _wait(lambda: _grpc_up(f"127.0.0.1:{port}"), "floor", 30)
        log = tmp_path / "run.tsv"
        for _ in range(2):
            result = h2load(grpc_url(f"127.0.0.1:{port}"), seconds=0.5, warmup=0.2, log=log, cpu=None,
                            connections=2, streams=4, body=body)
            assert result.requests > 0
            assert len(log.read_text().splitlines()) == result.requests
            assert result.failed == 0
            assert result.non_2xx == 0
    finally:
        floor.stop()
