"""``--workers N``: N processes sharing the gRPC and HTTP ports with SO_REUSEPORT.

The kernel spreads connections (not RPCs) across the processes, so Envoy must open
several connections: cap ``max_concurrent_streams`` on its ext_authz cluster (see
envoy/gateway.yaml). The supervisor restarts a worker that dies, stops at once if
one fails while starting, and forwards SIGTERM/SIGINT for a graceful drain.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

log = logging.getLogger("extauthz.workers")

STARTUP_WINDOW = 5.0


class Supervisor:
    def __init__(self, argv: list[str], count: int, grace: float) -> None:
        self._argv = argv
        self._count = count
        self._grace = grace
        self._stopping = False
        # Each worker leaves its metrics here; the one a scrape reaches serves them all.
        self._metrics = tempfile.mkdtemp(prefix="extauthz-metrics-")
        self._procs: list[tuple[subprocess.Popen[bytes], float]] = []

    def _spawn(self, index: int) -> tuple[subprocess.Popen[bytes], float]:
        cmd = [sys.executable, "-m", "extauthz", "serve", *self._argv, "--workers", "1",
               "--reuse-port"]
        env = {**os.environ, "EXTAUTHZ_WORKER_ID": str(index), "EXTAUTHZ_METRICS_DIR": self._metrics}
        return subprocess.Popen(cmd, env=env), time.monotonic()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._procs = [self._spawn(i) for i in range(self._count)]
        log.info("started %d workers: %s", self._count, [p.pid for p, _ in self._procs])
        status = 0
        while not self._stopping:
            time.sleep(0.2)
            for i, (proc, started) in enumerate(self._procs):
                code = proc.poll()
                if code is None or self._stopping:
                    continue
                if time.monotonic() - started < STARTUP_WINDOW:
                    log.error("worker %d exited with %d while starting; stopping", proc.pid, code)
                    self._stopping, status = True, 1
                    break
                log.warning("worker %d exited with %d; starting a new one", proc.pid, code)
                self._procs[i] = self._spawn(i)
        self._stop_all()
        shutil.rmtree(self._metrics, ignore_errors=True)
        return status

    def _stop_all(self) -> None:
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 5
        for proc, _ in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
