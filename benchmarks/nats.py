"""The ``nats-connect`` scenario: what the NATS auth callout adds to a connect.

Bounded (about 15 s): a nats-server in config mode with a static user (the baseline) and one
with ``examples/nats/server.conf`` (the callout, answered by one ``extauthz serve`` worker);
each is connected to and closed ``CONNECTS`` times one after another (latency), then by
``CONCURRENCY`` clients for ``SECONDS`` (connections per second). Through the callout the same
token is reused (the verified-token cache hits, as for a client that reconnects) and, as
``callout-new-token``, a fresh RS256 token each time (a signature check per connect).

    python -m benchmarks.nats          # prints the figures as JSON
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import yaml

from benchmarks.issuer import AUDIENCE, BenchIssuer
from benchmarks.procs import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nats"
CONNECTS = 200
CONCURRENCY = 8
SECONDS = 3.0
BASELINE_PASSWORD = "bench"  # noqa: S105 (a loopback benchmark's)


def _binary(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _wait(ready: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nats-connect: {what} not ready in {timeout:.0f}s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (loopback)
            return bool(r.status == 200)
    except OSError:
        return False


def _server(work: Path, name: str, text: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    conf = work / f"{name}.conf"
    conf.write_text(text.replace("listen: 127.0.0.1:4222", f"listen: 127.0.0.1:{port}"))
    log = work / f"{name}.log"
    proc = subprocess.Popen([_binary("nats-server"), "-c", str(conf), "-l", str(log)])
    _wait(lambda: log.exists() and "Server is ready" in log.read_text(), name)
    return proc, f"nats://127.0.0.1:{port}"


async def _connect_close(url: str, options: dict[str, Any]) -> None:
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                            connect_timeout=5, **options)
    await nc.close()


async def _measure(url: str, options: Callable[[], dict[str, Any]]) -> dict[str, float]:
    for _ in range(5):  # warm up: JWKS fetched, caches filled
        await _connect_close(url, options())
    latencies = []
    for _ in range(CONNECTS):
        opts = options()
        started = time.perf_counter()
        await _connect_close(url, opts)
        latencies.append(time.perf_counter() - started)
    done = 0
    deadline = time.perf_counter() + SECONDS

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await _connect_close(url, options())
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"connect_ms_median": 1000 * statistics.median(latencies),
            "connect_ms_p99": 1000 * latencies[int(len(latencies) * 0.99) - 1],
            "connections_per_s": done / elapsed}


def run(work: Path) -> dict[str, Any]:
    """The scenario's figures: baseline, callout (cached token), callout-new-token, and the
    callout's added median latency."""
    issuer = BenchIssuer(free_port()).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conf = (EXAMPLE / "server.conf").read_text()
        baseline_conf = re.sub(r"authorization \{.*\n\}\n", "", conf, flags=re.S).replace(
            "APP {}", f'APP {{ users: [ {{ user: bench, password: "{BASELINE_PASSWORD}" }} ] }}')
        proc, baseline_url = _server(work, "nats-baseline", baseline_conf)
        procs.append(proc)
        proc, callout_url = _server(work, "nats-callout", conf)
        procs.append(proc)
        policies = work / "policies.yaml"
        policies.write_text((EXAMPLE / "policies.yaml").read_text())
        http_port = free_port()
        config = work / "extauthz-nats.yaml"
        config.write_text(yaml.safe_dump({
            "issuers": [{"issuer": issuer.url, "audiences": [AUDIENCE], "algorithms": ["RS256"]}],
            "store": {"url": f"file://{policies}", "state_file": str(work / "state.json")},
            "grpc": {"listen": f"127.0.0.1:{free_port()}"},
            "http": {"listen": f"127.0.0.1:{http_port}"},
            "check_http": {"listen": None}, "admin": {"listen": None},
            "audit": {"stdout": False}, "log_level": "warning",
            "nats": {"url": callout_url, "user": "auth", "password": "change-me",
                     "issuer_seed_file": str(EXAMPLE / "issuer.nk"), "account": "APP"}}))
        with (work / "extauthz-nats.log").open("wb") as log:
            procs.append(subprocess.Popen([_binary("extauthz"), "serve", "--config", str(config)],
                                          stdout=log, stderr=subprocess.STDOUT))
        _wait(lambda: _http_ok(f"http://127.0.0.1:{http_port}/readyz"), "extauthz")
        token = issuer.mint(groups=("orders",))

        async def all_of_them() -> dict[str, Any]:
            out: dict[str, Any] = {}
            scenarios: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
                ("baseline", baseline_url, lambda: {"user": "bench", "password": BASELINE_PASSWORD}),
                ("callout", callout_url, lambda: {"token": token}),
                ("callout-new-token", callout_url,
                 lambda: {"token": issuer.mint(groups=("orders",))}),
            ]
            for name, url, options in scenarios:
                out[name] = await _measure(url, options)
            return out

        figures = asyncio.run(all_of_them())
        figures["added_ms_median"] = (figures["callout"]["connect_ms_median"]
                                      - figures["baseline"]["connect_ms_median"])
        return figures
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        issuer.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp:
        print(json.dumps(run(Path(tmp)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
