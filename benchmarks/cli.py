"""``make bench`` / ``python -m benchmarks`` / ``extauthz bench``: run the benchmark and write
the JSON, Markdown and PNG reports.

    python -m benchmarks                   # the full run (about 10 minutes; updates the README table)
    python -m benchmarks --quick           # smoke run: about two minutes (the test suite runs it)
    python -m benchmarks --only allow-cached,floor --rounds 5
    python -m benchmarks --target 10.0.0.7:9001 --token "$TOKEN" --host api.example.com --path /v1/x

The same options through make (they go in one BENCH_ARGS, quoted) or the installed command:

    make bench BENCH_ARGS="--quick"
    make bench BENCH_ARGS="--only allow-cached,floor --rounds 5"
    extauthz bench --quick                 # in a source checkout (an installed wheel has none)
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.checks import check_request, grpc_frame
from benchmarks.compare import comparisons
from benchmarks.gateways import GATEWAY_HTTP
from benchmarks.load import grpc_url, h2load
from benchmarks.scenarios import (
    ENVOY_VARIANTS,
    HTTP_VARIANTS,
    SCENARIO_NAMES,
    Bench,
    Options,
    all_names,
    grpc_scenarios,
    http_scenarios,
    machine,
    summarise,
)
from benchmarks.stack import BenchError, Stack, check_once

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rates {text!r}: give req/s numbers like 500,1000,2000") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"--rates {text!r}: give positive req/s numbers like 500,1000,2000")
    return rates


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument("--quick", action="store_true",
                   help="smoke run, about two minutes: 1 round of 1.5 s per scenario, rates "
                        "200,400, a 5 s soak of 300 tokens; checks answers, claims no speed")
    p.add_argument("--rounds", type=_positive(int), help="rounds of every scenario (default 3)")
    p.add_argument("--seconds", type=_positive(float), help="measured seconds per run (default 3)")
    p.add_argument("--connections", type=_positive(int), default=4, help="h2load connections (default 4)")
    p.add_argument("--streams", type=_positive(int), default=16, help="streams per connection (default 16)")
    p.add_argument("--http-connections", type=_positive(int), default=16,
                   help="wrk connections straight to the HTTP Check port (default 16)")
    p.add_argument("--envoy-connections", type=_positive(int), default=32,
                   help="wrk connections through Envoy at saturation (default 32)")
    p.add_argument(
        "--workers",
        type=_positive(int),
        default=os.cpu_count() or 2,
        help="processes for the workers scenario (default: the CPU count)",
    )
    p.add_argument("--rates", type=_rates, help="fixed req/s through Envoy (default 1000,2000)")
    p.add_argument("--soak-seconds", type=float,
                   help="memory soak length, per transport; 0 skips it (default 60)")
    p.add_argument(
        "--soak-tokens", type=_positive(int), help="distinct tokens rotated in the soak (default 10000)"
    )
    p.add_argument(
        "--only", default="",
        help="comma-separated scenario names, or prefixes ending at a '-': allow, deny, http, envoy-http"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help=f"report directory (default {RESULTS})")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    t = p.add_argument_group("a running deployment")
    t.add_argument("--target", metavar="HOST:PORT", help="the Check service to load instead of a local stack")
    t.add_argument("--token", help="a token the target accepts (with --target)")
    t.add_argument("--host", default="api.example.com", help="request host (with --target)")
    t.add_argument("--path", default="/", help="request path the token is allowed on (with --target)")
    return p


def options(args: argparse.Namespace) -> Options:
    quick = args.quick
    return Options(
        rounds=args.rounds or (1 if quick else 3),
        seconds=args.seconds or (1.5 if quick else 3.0),
        warmup=0.5,  # h2load discards its first half second (connections, first requests)
        connections=args.connections,
        streams=args.streams,
        http_connections=args.http_connections,
        envoy_connections=args.envoy_connections,
        workers=args.workers,
        rates=args.rates or ((200, 400) if quick else (1000, 2000)),
        soak_seconds=args.soak_seconds if args.soak_seconds is not None else (5.0 if quick else 60.0),
        soak_tokens=args.soak_tokens or (300 if quick else 10_000),
        only=frozenset(s.strip() for s in args.only.split(",") if s.strip()),
        quick=quick,
    )


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _envoy_version() -> str:
    from demo.gateway import envoy_binary

    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for word in out.split():
        if word.count("/") >= 2 and word[0].isalnum():
            return word.split("/")[1]
    return out.strip()[:60] or "unknown"


def run_local(opts: Options, work: Path) -> dict[str, Any]:
    stack = Stack(work=work, workers=opts.workers)
    http_gateway = GATEWAY_HTTP.exists()
    try:
        _log(f"bench: starting Redis, issuer, extauthz x{3 + (opts.workers > 1)}, two floors, "
             f"{5 if http_gateway else 3} Envoys in {work}")
        if not http_gateway:
            _log(f"bench: no {GATEWAY_HTTP.name}: the Envoy scenarios over HTTP are left out")
        stack.start_redis()
        stack.start_issuer()
        stack.apply_policies("bench1k:", 1000)
        stack.apply_policies("bench10k:", 10_000)
        main = stack.start_instance("main", "bench1k:")
        stack.start_instance("verify", "bench1k:", extra={"token": {"cache_size": 0}})
        stack.start_instance("p10k", "bench10k:")
        if opts.workers > 1:
            stack.start_instance("workers", "bench1k:", workers=opts.workers)
        stack.start_floor()
        stack.start_http_floor()
        stack.wait_ready()
        stack.start_gateways(main, http=http_gateway)
        bench = Bench(stack, opts, _log)
        grpc = [s for s in grpc_scenarios(stack, opts.workers) if bench.wanted(s.name)]
        http = [s for s in http_scenarios(stack, opts.workers) if bench.wanted(s.name)]
        variants = [v for v in ENVOY_VARIANTS if bench.wanted(v) and (http_gateway or v not in HTTP_VARIANTS)]
        bench.probe(grpc)
        bench.probe_http(http)
        bench.probe_envoy(variants)
        for round_no in range(1, opts.rounds + 1):
            _log(f"bench: round {round_no}/{opts.rounds}")
            for s in grpc:
                bench.run_grpc(s, round_no)
            for h in http:
                bench.run_http(h, round_no)
            ordered = variants if round_no % 2 else variants[::-1]
            for rate in opts.rates:
                for variant in ordered:
                    bench.run_envoy(rate, variant, round_no)
            for variant in ordered:
                if bench.wanted(f"{variant}@max"):
                    bench.run_envoy_max(variant, round_no)
        soak, soak_http = bench.soak("grpc"), bench.soak("http")
        if bench.wanted("nats-connect"):  # the NATS auth callout's connect cost (issue 15)
            from benchmarks.nats import run as run_nats

            _log("bench: nats-connect")
            (work / "nats").mkdir(exist_ok=True)
            nats_connect: dict[str, Any] | None = run_nats(work / "nats")
        else:
            nats_connect = None
        return {
            "scenarios": [summarise(o) for o in bench.outcomes.values()],
            "comparisons": comparisons({n: o.runs for n, o in bench.outcomes.items()}, opts.workers,
                                       opts.rates),
            "soak": soak,
            "soak_http": soak_http,
            "nats_connect": nats_connect,
        }
    finally:
        stack.close()


def run_target(opts: Options, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Absolute figures for a deployment: allow (with --token), deny-missing, deny-bad-signature."""
    bench = Bench(Stack(work=work, workers=1), opts, _log)
    bodies: list[tuple[str, str | None, int]] = [("deny-missing", None, 16)]
    if args.token:
        head, _, sig = args.token.rpartition(".")
        bodies = [("allow", args.token, 0), *bodies, ("deny-bad-signature", f"{head}.{sig[:-4]}AAAA", 16)]
    for name, token, code in bodies:
        body = check_request(host=args.host, path=args.path, token=token).SerializeToString()
        got = check_once(args.target, body).status.code
        if got != code:
            raise BenchError(
                f"{name}: the target answered gRPC code {got}, expected {code}"
                + (" (is --token valid for --host/--path?)" if name == "allow" else "")
            )
        description = f"against {args.target}"
        body_file = work / f"{name}.bin"
        body_file.write_bytes(grpc_frame(body))
        for round_no in range(1, opts.rounds + 1):
            result = h2load(
                grpc_url(args.target),
                seconds=opts.seconds,
                warmup=opts.warmup,
                log=work / f"{name}.tsv",
                cpu=None,
                connections=opts.connections,
                streams=opts.streams,
                body=body_file,
            )
            after = check_once(args.target, body).status.code  # h2load sees only HTTP 200
            wrong = 0 if after == code else result.requests  # e.g. the token expired meanwhile
            if wrong:
                _log(f"bench: {name}: after the load the target answered gRPC code {after}, not {code}")
            bench.record(name, "grpc", description, round_no, result, extra_errors=wrong)
    return {"scenarios": [summarise(o) for o in bench.outcomes.values()], "comparisons": [], "soak": None}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    opts = options(args)
    if args.token and not args.target:
        parser().error("--token goes with --target")
    names = all_names(opts.workers)
    unknown = sorted(o for o in opts.only
                     if not any(n in (o, o.split("@")[0]) or n.startswith(f"{o}-") for n in names))
    if unknown:
        choices = ", ".join(SCENARIO_NAMES)
        parser().error(f"--only: no scenario named {', '.join(unknown)}; choose from {choices}")
    work = Path(tempfile.mkdtemp(prefix="extauthz-bench-"))
    started = time.monotonic()
    try:
        body = run_target(opts, args, work) if args.target else run_local(opts, work)
    except (BenchError, FileNotFoundError, RuntimeError, TimeoutError, subprocess.SubprocessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        print(f"bench: logs are in {work}", file=sys.stderr)
        return 1
    results: dict[str, Any] = {
        "schema": 1,
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": args.target,
        "machine": {**machine(), "envoy": _envoy_version()},
        "settings": {
            "rounds": opts.rounds,
            "seconds": opts.seconds,
            "connections": opts.connections,
            "streams": opts.streams,
            "http_connections": opts.http_connections,
            "envoy_connections": opts.envoy_connections,
            "rates": list(opts.rates),
            "workers": opts.workers,
            "quick": opts.quick,
            "took_s": round(time.monotonic() - started),
        },
        **body,
    }
    paths = report.write_reports(results, args.out)
    print(report.markdown(results))
    _log(f"bench: wrote {', '.join(str(p) for p in paths.values())}")
    # A full local run into the committed results is the README's latest run too.
    if not (opts.quick or opts.only or args.target) and args.out.resolve() == RESULTS:
        if report.update_readme(results, README):
            _log(f"bench: updated the Performance table in {README}")
        else:
            _log(f"bench: {README} has no generated table (markers {report.README_BEGIN!r} ...)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        _log(f"bench: work directory kept: {work}")
    errors = sum(s["summary"]["errors"] for s in results["scenarios"])
    return 1 if errors else 0
