"""The load generators: h2load (raw gRPC to the service, or HTTP/1.1 through Envoy at a
fixed rate) and wrk (HTTP/1.1 at saturation: straight to the HTTP Check port, through
Envoy, or a Lua script rotating tokens for the soak). Each run is bounded in time;
latencies come from h2load's per-request log or wrk's own histogram."""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.checks import CHECK_PATH
from benchmarks.procs import steal_seconds

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")  # "1.50s" or "500.12ms"
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclass(frozen=True)
class LoadResult:
    requests: int  # completed with a response
    failed: int  # h2load: failed + errored + timeout; wrk: socket errors
    non_2xx: int
    seconds: float
    throughput: float
    latency_ms: dict[str, float]
    server_cpu_cores: float | None  # None: a remote target, whose CPU we cannot see
    client_cpu_cores: float
    steal_cores: float = 0.0  # CPU the hypervisor took for other guests meanwhile


class _Summary(NamedTuple):
    requests: int    # completed with a response
    failed: int      # h2load's "failed" already counts the errored and timed out
    non_2xx: int
    seconds: float
    throughput: float


def _summary(out: str) -> _Summary:
    """What one h2load printed at the end."""
    finished, reqs, status = _FINISHED.search(out), _REQUESTS.search(out), _STATUS.search(out)
    if not (finished and reqs and status):
        raise RuntimeError(f"cannot read h2load's summary:\n{out[-1500:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return _Summary(requests=int(reqs.group(3)), failed=int(reqs.group(5)),
                    non_2xx=int(status.group(2)) + int(status.group(3)) + int(status.group(4)),
                    seconds=seconds, throughput=float(finished.group(3)))


def _durations(logs: Iterable[Path]) -> list[float]:
    """Per-request microseconds from h2load's --log-file lines (status -1: no response,
    counted as failed, not a latency)."""
    lines = [line.split("\t") for f in logs for line in f.read_text().splitlines()]
    return [float(parts[2]) for parts in lines if len(parts) >= 3 and parts[1] != "-1"]


def require(command: str, package: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise FileNotFoundError(f"{command} is missing: `make bench` installs it (apt-get install {package})")
    return path


def latency(durations_us: Sequence[float]) -> dict[str, float]:
    """The mean and the percentiles, in milliseconds (empty without requests)."""
    if not durations_us:
        return {}
    return {"mean": statistics.fmean(durations_us) / 1000.0, **percentiles(durations_us)}


def percentiles(durations_us: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99/p99.9 in milliseconds."""
    if not durations_us:
        return {}
    ordered = sorted(durations_us)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1000.0

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "p999": rank(0.999)}


class _Measured(NamedTuple):
    out: str
    server: float | None  # CPU cores used by the server processes
    client: float         # ... by the load generator
    steal: float          # ... taken by the hypervisor for other guests


def _measured(run: Callable[[], str], cpu: Callable[[], float] | None) -> _Measured:
    """Run a load generator; return its output and the CPU it, the server and others used."""
    before_cpu, before_client = cpu() if cpu else 0.0, resource.getrusage(resource.RUSAGE_CHILDREN)
    before_steal = steal_seconds()
    started = time.monotonic()
    out = run()
    wall = time.monotonic() - started
    after_client = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after_client.ru_utime - before_client.ru_utime) + (
        after_client.ru_stime - before_client.ru_stime
    )
    return _Measured(out, (cpu() - before_cpu) / wall if cpu else None, client / wall,
                     (steal_seconds() - before_steal) / wall)


def h2load(
    url: str,
    *,
    seconds: float,
    log: Path,
    cpu: Callable[[], float] | None,
    connections: int,
    streams: int = 1,
    threads: int = 1,
    body: Path | None = None,
    headers: Sequence[str] = (),
    rate_per_client: int | None = None,
    http1: bool = False,
    warmup: float = 1.0,
) -> LoadResult:
    argv = [
        require("h2load", "nghttp2-client"),
        "-D",
        f"{round(seconds * 1000)}ms",
        "--warm-up-time",
        f"{round(warmup * 1000)}ms",
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        str(threads),
        "--log-file",
        str(log),
    ]
    for h in headers:
        argv += ["-H", h]
    if body is not None:
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
    if rate_per_client:
        argv += ["--rps", str(rate_per_client)]
    if http1:
        argv.append("--h1")
    argv.append(url)
    log.unlink(missing_ok=True)  # h2load appends to --log-file: each run starts empty

    def run() -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + warmup + 60, check=False
        )
        if done.returncode != 0 and "finished in" not in done.stdout:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return done.stdout

    out, server, client, steal = _measured(run, cpu)
    summary = _summary(out)
    return LoadResult(
        requests=summary.requests,
        failed=summary.failed,
        non_2xx=summary.non_2xx,
        seconds=summary.seconds,
        throughput=summary.throughput,
        latency_ms=latency(_durations([log])),
        server_cpu_cores=server,
        client_cpu_cores=client,
        steal_cores=steal,
    )


def paced(url: str, *, rate: int, seconds: float, warmup: float, logs: Path, cpu: Callable[[], float],
          headers: Sequence[str] = (), per_connection: int = 100) -> LoadResult:
    """An open-loop-like fixed rate over HTTP/1.1: one h2load process per connection, each
    at ``per_connection`` req/s, started 1/rate apart. (One h2load with many clients at
    --rps fires them all on the same tick: bursts of N requests that measure queueing.)"""
    binary = require("h2load", "nghttp2-client")
    count = max(1, rate // per_connection)
    each = max(1, rate // count)
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.tsv"):  # h2load appends to --log-file: each run starts empty
        old.unlink()

    def argv(i: int) -> list[str]:
        out = [binary, "--h1", "-D", f"{round(seconds * 1000)}ms",
               "--warm-up-time", f"{round(warmup * 1000)}ms", "-c", "1", "-t", "1", "--rps", str(each),
               "--log-file", str(logs / f"{i}.tsv")]
        for h in headers:
            out += ["-H", h]
        return [*out, url]

    def run() -> str:
        procs: list[subprocess.Popen[str]] = []
        try:
            for i in range(count):
                procs.append(subprocess.Popen(argv(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True))
                time.sleep(1.0 / rate)
            outs = []
            for proc in procs:
                out, err = proc.communicate(timeout=seconds + warmup + 60)
                if proc.returncode != 0 and "finished in" not in out:
                    raise RuntimeError(f"h2load failed ({proc.returncode}): {err.strip()[-500:]}")
                outs.append(out)
            return "\f".join(outs)
        finally:
            for proc in procs:  # none left behind when one failed
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    out, server, client, steal = _measured(run, cpu)
    parts = [_summary(part) for part in out.split("\f")]
    return LoadResult(requests=sum(p.requests for p in parts), failed=sum(p.failed for p in parts),
                      non_2xx=sum(p.non_2xx for p in parts), seconds=max(p.seconds for p in parts),
                      throughput=sum(p.throughput for p in parts),
                      latency_ms=latency(_durations(logs.glob("*.tsv"))), server_cpu_cores=server,
                      client_cpu_cores=client, steal_cores=steal)


def grpc_url(address: str) -> str:
    return f"http://{address}{CHECK_PATH}"


_WRK_SCRIPT = """
local headers = {}
for line in io.lines(os.getenv("BENCH_HEADERS")) do
  local name, value = line:match("^([^:]+): (.*)$")
  if name then headers[name] = value end
end
local tokens = {}
local rotate = os.getenv("BENCH_TOKENS")
if rotate and rotate ~= "" then
  for line in io.lines(rotate) do tokens[#tokens + 1] = line end
end
local path = os.getenv("BENCH_PATH")
local fixed = nil
local i = 0
request = function()
  if #tokens == 0 then
    if fixed == nil then fixed = wrk.format("GET", path, headers) end
    return fixed
  end
  i = i % #tokens + 1
  headers["Authorization"] = "Bearer " .. tokens[i]
  return wrk.format("GET", path, headers)
end
done = function(summary, latency, requests)
  local f = io.open(os.getenv("BENCH_OUT"), "w")
  f:write(string.format('{"requests": %d, "seconds": %f, "non_2xx": %d, "socket_errors": %d, '
    .. '"mean": %f, "p50": %f, "p90": %f, "p99": %f, "p999": %f}',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency.mean / 1e3, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency:percentile(99.9) / 1e3))
  f:close()
end
"""


def wrk(
    url: str,
    *,
    seconds: float,
    host: str,
    path: str,
    work: Path,
    cpu: Callable[[], float] | None,
    headers: Sequence[tuple[str, str]] = (),
    tokens: Path | None = None,
    connections: int = 8,
    threads: int = 1,
) -> LoadResult:
    """wrk over HTTP/1.1 keep-alive: ``connections`` closed-loop connections for ``seconds``
    (whole seconds, at least 1: wrk takes no fractions). Every request carries ``Host``
    and ``headers``; with ``tokens`` (one per line) each carries the next one as a bearer.
    Latencies are wrk's own (its histogram, microsecond resolution); ``non_2xx`` counts
    answers of 400 and above (wrk counts no other)."""
    script, out_path, header_file = work / "bench.lua", work / "wrk.json", work / "wrk-headers.txt"
    script.write_text(_WRK_SCRIPT)
    header_file.write_text("".join(f"{k}: {v}\n" for k, v in [("Host", host), *headers]))
    out_path.unlink(missing_ok=True)
    env = {
        "BENCH_HEADERS": str(header_file),
        "BENCH_TOKENS": str(tokens or ""),
        "BENCH_PATH": path,
        "BENCH_OUT": str(out_path),
        "PATH": "/usr/bin:/bin",
    }
    argv = [
        require("wrk", "wrk"),
        "-t",
        str(threads),
        "-c",
        str(max(connections, threads)),
        "-d",
        f"{max(1, math.ceil(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]

    def run() -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
        )
        if done.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return done.stdout

    _, server, client, steal = _measured(run, cpu)
    data: dict[str, Any] = json.loads(out_path.read_text())
    return LoadResult(
        requests=int(data["requests"]),
        failed=int(data["socket_errors"]),
        non_2xx=int(data["non_2xx"]),
        seconds=float(data["seconds"]),
        throughput=data["requests"] / max(float(data["seconds"]), 1e-9),
        latency_ms={k: float(data[k]) for k in ("mean", "p50", "p90", "p99", "p999")},
        server_cpu_cores=server,
        client_cpu_cores=client,
        steal_cores=steal,
    )
