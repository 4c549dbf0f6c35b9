"""Stopping a server the tests started: SIGTERM, and SIGKILL if it lingers."""

from __future__ import annotations

import subprocess


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """Stop ``proc`` (if it still runs) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
