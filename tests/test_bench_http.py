"""The benchmark's issue 14 parts, each on its own and with no speed assertions: the HTTP
floor server, wrk's summary, the Envoy configurations (the jwt_authn peer and the two
shipped gateways) under a real Envoy, --only's selection, and the targets' judgement."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.checks import http_check_headers
from benchmarks.compare import comparisons
from benchmarks.gateways import GATEWAY_HTTP, gateway, jwt_gateway
from benchmarks.issuer import AUDIENCE, BenchIssuer
from benchmarks.load import wrk
from benchmarks.scenarios import ENVOY_VARIANTS, SCENARIO_NAMES, all_names, wanted
from demo.gateway import GATEWAY, envoy_binary, envoy_command
from demo.processes import Process
from tests.support.ports import free_port, wait_for_port
from tests.support.stack import http_get


@pytest.fixture
def http_floor(tmp_path: Path) -> Any:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.http_floor", "--listen", f"127.0.0.1:{port}"]
    proc = Process("http-floor", argv, tmp_path / "http-floor.log").start()
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.stop()


def _exchange(port: int, data: bytes, *, want: int) -> bytes:
    """Send ``data`` on one connection; read until ``want`` answers arrived or it closed."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        while got.count(b"HTTP/1.1 ") < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def test_the_http_floor_answers_every_request_200_on_one_kept_connection(http_floor: int) -> None:
    request = b"GET /api/x?y=1 HTTP/1.1\r\nHost: svc.bench.local\r\nAuthorization: Bearer t\r\n\r\n"
    got = _exchange(http_floor, request * 3, want=3)  # pipelined, as one write
    assert got == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" * 3


def test_the_http_floor_refuses_garbage_with_400_and_closes(http_floor: int) -> None:
    got = _exchange(http_floor, b"\x16\x03\x01 not http\r\n\r\n", want=2)
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert got.count(b"HTTP/1.1 ") == 1  # and the connection closed


def test_wrk_loads_the_http_floor_and_reads_its_own_summary(http_floor: int, tmp_path: Path) -> None:
    result = wrk(f"http://127.0.0.1:{http_floor}", seconds=1, host="svc.bench.local", path="/a?b=1",
                 headers=http_check_headers("t0k3n"), work=tmp_path, cpu=None, connections=2)
    assert result.requests > 0
    assert (result.failed, result.non_2xx) == (0, 0)
    assert set(result.latency_ms) == {"mean", "p50", "p90", "p99", "p999"}
    assert result.server_cpu_cores is None


def _validate(config: dict[str, Any], tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _ports() -> dict[str, int]:
    return {"listen_port": free_port(), "admin_port": free_port(), "http_port": free_port(),
            "upstream_port": free_port()}


def test_envoy_accepts_every_gateway_the_benchmark_runs(tmp_path: Path) -> None:
    issuer = BenchIssuer(port=free_port())
    peer = jwt_gateway(jwks=issuer.jwks(), issuer=issuer.url, audiences=[AUDIENCE], **_ports())
    hcm = peer["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.jwt_authn",
                                                         "envoy.filters.http.router"]
    _validate(peer, tmp_path, "jwt")
    for source in (GATEWAY, GATEWAY_HTTP):
        config = gateway(source=source, check_port=4242, **_ports())
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        check = clusters["extauthz_grpc" if source == GATEWAY else "extauthz_check"]
        endpoint = check["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"]["port_value"] == 4242
        _validate(config, tmp_path, source.stem)


def test_the_jwt_authn_peer_allows_the_benchmark_token_and_refuses_others(tmp_path: Path) -> None:
    """The peer does the same work as extauthz's allow: the issuer's keys, its audience."""
    issuer = BenchIssuer(port=free_port())
    ports = _ports()
    config = jwt_gateway(jwks=issuer.jwks(), issuer=issuer.url, audiences=[AUDIENCE], **ports)
    path = tmp_path / "jwt.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    envoy = Process("envoy-jwt", envoy_command(path), tmp_path / "envoy.log").start()
    try:
        base = f"http://127.0.0.1:{ports['listen_port']}"
        envoy.wait_http(f"{base}/healthz", timeout=60)
        token = issuer.mint("ES256")
        head, _, sig = token.rpartition(".")
        forged = f"{head}.{sig[:-8]}{'A' * 8 if sig[-8:] != 'A' * 8 else 'B' * 8}"
        assert http_get(f"{base}/api/x", {"Authorization": f"Bearer {token}"}).status == 200
        assert http_get(f"{base}/api/x", {"Authorization": f"Bearer {forged}"}).status == 401
        assert http_get(f"{base}/api/x").status == 401
        other = BenchIssuer(port=issuer.port).mint("RS256")  # same issuer URL, other keys
        assert http_get(f"{base}/api/x", {"Authorization": f"Bearer {other}"}).status == 401
    finally:
        envoy.stop()


def test_the_scenario_table_has_the_http_and_envoy_families() -> None:
    assert {"http-floor", "http-allow-cached", "http-allow-verify-rs256", "http-deny-missing",
            "http-deny-bad-signature", "http-deny-policy", "http-stepup-challenge"} <= set(SCENARIO_NAMES)
    assert set(ENVOY_VARIANTS) == {"envoy-only", "envoy-jwt", "envoy-grpc", "envoy-http", "envoy-grpc-floor",
                                   "envoy-http-floor"}
    assert {"envoy-jwt@max", "envoy-http@max", "http-workers-2"} <= set(all_names(2))


def test_only_selects_a_name_or_every_name_it_prefixes_up_to_a_dash() -> None:
    only = frozenset({"http-allow", "envoy-jwt", "floor"})
    assert wanted(only, "http-allow-cached")
    assert wanted(only, "http-allow-verify-es256")
    assert wanted(only, "envoy-jwt@1000")
    assert wanted(only, "envoy-jwt@max")
    assert wanted(only, "floor")
    assert not wanted(only, "http-floor")
    assert not wanted(only, "allow-cached")
    assert not wanted(only, "http-allowed")  # a prefix ends at a dash
    assert wanted(frozenset(), "anything")


def _run(round_no: int, throughput: float, cpu_us: float, mean: float = 1.0,
         p99: float = 2.0) -> dict[str, Any]:
    return {"round": round_no, "throughput": throughput, "cpu_us_per_check": cpu_us,
            "server_cpu_cores": throughput * cpu_us / 1e6, "latency_ms": {"mean": mean, "p99": p99}}


def test_the_issue_14_targets_are_judged_on_the_median_of_same_round_ratios() -> None:
    outcomes = {
        "floor": [_run(1, 5000, 200), _run(2, 5000, 200), _run(3, 5000, 200)],
        "allow-cached": [_run(1, 3000, 300), _run(2, 3000, 300), _run(3, 3000, 300)],
        # CPU per check 40/200 = 0.20 in two rounds of three: met; throughput 3.2, 2.0, 3.1: met (3.1)
        "http-allow-cached": [_run(1, 9600, 40), _run(2, 6000, 80), _run(3, 9300, 40)],
        "envoy-jwt@max": [_run(1, 10000, 50)],
        "envoy-http@max": [_run(1, 2900, 150)],  # 0.29 of the peer: not met
        "envoy-only@1000": [_run(1, 1000, 100, mean=0.3, p99=1.0)],
        "envoy-http@1000": [_run(1, 1000, 300, mean=1.2, p99=2.5)],  # +0.9 ms mean met, +1.5 ms p99 met
    }
    rows = {(c["name"], c["metric"]): c for c in comparisons(outcomes, workers=1, rates=(1000,))}
    cpu = rows[("http-allow-cached / floor (gRPC)", "CPU per check ratio")]
    assert (cpu["median"], cpu["target"], cpu["met"]) == (0.2, "<= 0.25", True)
    speed = rows[("http-allow-cached / allow-cached (gRPC)", "throughput ratio")]
    assert (speed["median"], speed["met"]) == (3.1, True)
    peer = rows[("envoy-http@max / envoy-jwt@max", "max throughput ratio")]
    assert (peer["median"], peer["target"], peer["met"]) == (0.29, ">= 0.30", False)
    mean = rows[("envoy-http @1000/s: added mean", "ms vs envoy-only")]
    assert (mean["median"], mean["target"], mean["met"]) == (0.9, "<= 1 ms", True)
    p99 = rows[("envoy-http @1000/s: added p99", "ms vs envoy-only")]
    assert (p99["median"], p99["target"], p99["met"]) == (1.5, "<= 2 ms", True)


def test_a_profile_is_summed_into_own_and_inclusive_shares_per_frame() -> None:
    from benchmarks.profile import summarise

    collapsed = ("main (a.py:1);loop (a.py:2);check (b.py:3) 6\n"
                 "main (a.py:1);loop (a.py:2);write (c.py:4) 3\n"
                 "main (a.py:1);loop (a.py:2);check (b.py:3);check (b.py:3) 1\n"
                 "garbage line\n")
    own, inclusive = summarise(collapsed)
    assert own == [("check (b.py:3)", 0.7), ("write (c.py:4)", 0.3)]
    assert inclusive[:2] == [("loop (a.py:2)", 1.0), ("main (a.py:1)", 1.0)]  # ties by name
    assert ("check (b.py:3)", 0.7) in inclusive  # a recursive frame counts once per stack
    assert summarise("") == ([], [])
