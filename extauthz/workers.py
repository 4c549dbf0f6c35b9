"""``--workers N``: N processes sharing the gRPC and HTTP ports with SO_REUSEPORT.

The kernel spreads connections (not RPCs) across the processes, so Envoy must open
several connections: cap ``max_concurrent_streams`` on its ext_authz cluster (see
envoy/gateway.yaml). SIGTERM/SIGINT are forwarded for a graceful drain.

A worker whose *first* start ends by itself within ``STARTUP_WINDOW`` (bad config, a taken
port: it would fail the same way again) stops the supervisor, so the mistake is seen at
once. Any later exit, and a first start killed by a signal (the OOM killer, an operator),
is restarted in that worker's slot alone, after a per-worker exponential backoff that
resets once a worker has run for ``HEALTHY_RUN``: one crash-looping worker never stops
the others, which keep serving.
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
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("extauthz.workers")

STARTUP_WINDOW = 5.0
HEALTHY_RUN = 60.0  # a worker that ran this long resets its backoff
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def restart_delay(streak: int) -> float:
    """Seconds before restarting a worker after ``streak`` short runs in a row (0: at once)."""
    if streak <= 0:
        return 0.0
    return min(BACKOFF_BASE * float(2 ** min(streak - 1, 16)), BACKOFF_CAP)


@dataclass
class _Slot:
    """One worker position: its current process, or when the next one may start."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    first: bool = True  # the current process is the slot's first start
    streak: int = 0  # runs shorter than HEALTHY_RUN in a row
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, argv: list[str], count: int, grace: float) -> None:
        self._argv = argv
        self._count = count
        self._grace = grace
        self._stopping = False
        # Each worker leaves its metrics here; the one a scrape reaches serves them all.
        self._metrics = tempfile.mkdtemp(prefix="extauthz-metrics-")
        self._slots: list[_Slot] = []

    def _spawn(self, slot: _Slot) -> None:
        cmd = [sys.executable, "-m", "extauthz", "serve", *self._argv, "--workers", "1",
               "--reuse-port"]
        env = {**os.environ, "EXTAUTHZ_WORKER_ID": str(slot.index),
               "EXTAUTHZ_METRICS_DIR": self._metrics}
        slot.proc, slot.started = subprocess.Popen(cmd, env=env), time.monotonic()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._slots = [_Slot(i) for i in range(self._count)]
        for slot in self._slots:
            self._spawn(slot)
        log.info("started %d workers: %s", self._count,
                 [s.proc.pid for s in self._slots if s.proc is not None])
        status = 0
        while not self._stopping:
            time.sleep(0.1)
            for slot in self._slots:
                if self._stopping:
                    break
                if not self._tend(slot):
                    self._stopping, status = True, 1
        self._stop_all()
        shutil.rmtree(self._metrics, ignore_errors=True)
        return status

    def _tend(self, slot: _Slot) -> bool:
        """Restart the slot's worker when it is due; False: stop everything."""
        now = time.monotonic()
        if slot.proc is None:
            if now >= slot.restart_at:
                self._spawn(slot)
                slot.first = False
                log.info("worker slot %d: started %d", slot.index,
                         slot.proc.pid if slot.proc else -1)
            return True
        code = slot.proc.poll()
        if code is None:
            return True
        ran = now - slot.started
        if slot.first and ran < STARTUP_WINDOW and code >= 0:
            log.error("worker %d exited with %d while starting; stopping", slot.proc.pid, code)
            return False
        slot.streak = slot.streak + 1 if ran < HEALTHY_RUN else 0
        delay = restart_delay(slot.streak)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        level = logging.ERROR if slot.streak >= 3 else logging.WARNING
        log.log(level, "worker %d (slot %d) %s after %.1fs; %s (%d short runs in a row); the "
                "other workers keep serving", slot.proc.pid, slot.index, how, ran,
                f"restarting in {delay:.1f}s" if delay else "restarting now", slot.streak)
        slot.proc, slot.restart_at = None, now + delay
        return True

    def _stop_all(self) -> None:
        procs = [s.proc for s in self._slots if s.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 5
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
