"""Profile the decision path under load: py-spy samples one serving extauthz process while
wrk (HTTP) or h2load (gRPC) loads it with the allow-cached check, then the collapsed stacks
are summed into the top functions by own time and by time inclusive of their callees.

    python -m benchmarks.profile                       # HTTP, 10 s, 500 samples/s
    python -m benchmarks.profile --transport grpc --seconds 20 --out /tmp/prof
    python -m benchmarks.profile --gil            # only the thread holding the GIL

py-spy needs ptrace on the process (root, or kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks import policyset
from benchmarks.checks import check_request, grpc_frame, http_check_headers
from benchmarks.load import grpc_url, h2load, wrk
from benchmarks.stack import Stack


def summarise(collapsed: str, top: int = 25) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(own, inclusive) shares of the samples per frame, from py-spy's ``--format raw`` lines
    (``frame;frame;...;leaf COUNT``), the largest first (ties by name). A frame counts once
    per stack."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [], []

    def largest(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [(frame, n / total) for frame, n in ranked]

    return largest(own), largest(inclusive)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    p.add_argument("--transport", choices=("http", "grpc"), default="http")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--gil", action="store_true",
                   help="only samples of threads holding the GIL (Python's own work; no waits)")
    p.add_argument("--native", action="store_true", help="C frames too (uvloop, httptools, grpc)")
    p.add_argument("--out", type=Path, help="directory for the raw stacks")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = args.out or Path(tempfile.mkdtemp(prefix="extauthz-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(work=out, workers=1)
    try:
        stack.start_redis()
        issuer = stack.start_issuer()
        stack.apply_policies("bench1k:", 1000)
        main_instance = stack.start_instance("main", "bench1k:")
        stack.wait_ready()
        token = issuer.mint("RS256")
        pid = main_instance.pids[0]
        raw = out / f"{args.transport}.collapsed"
        record = [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration",
                  str(args.seconds), "--format", "raw", "--output", str(raw),
                  *([] if args.native else ["--nonblocking"]),  # native stacks need a stopped process
                  *(["--gil"] if args.gil else []), *(["--native"] if args.native else [])]
        sampler = threading.Thread(target=subprocess.run, args=(record,),
                                   kwargs={"capture_output": True, "check": False})
        sampler.start()
        if args.transport == "http":
            wrk(f"http://{main_instance.check_http_address}", seconds=args.seconds + 1,
                host=policyset.TARGET_HOST, path=policyset.ALLOW_PATH, headers=http_check_headers(token),
                work=out, cpu=None, connections=16)
        else:
            body = out / "allow.bin"
            body.write_bytes(grpc_frame(check_request(host=policyset.TARGET_HOST, path=policyset.ALLOW_PATH,
                                                      token=token).SerializeToString()))
            h2load(grpc_url(main_instance.address), seconds=args.seconds + 1, warmup=0,
                   log=out / "h2load.tsv", cpu=None, connections=4, streams=16, body=body)
        sampler.join()
        own, inclusive = summarise(raw.read_text() if raw.exists() else "")
        if not own:
            print(f"profile: py-spy recorded nothing (see {out}); is ptrace allowed?", file=sys.stderr)
            return 1
        print(f"## {args.transport}: share of samples in pid {pid} ({raw})\n\n### own time")
        for frame, share in own:
            print(f"{share * 100:5.1f}%  {frame}")
        print("\n### inclusive")
        for frame, share in inclusive:
            print(f"{share * 100:5.1f}%  {frame}")
        return 0
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
