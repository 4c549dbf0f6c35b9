"""Start and stop the demo's processes (also used by the tests and the benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class Process:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    discard_stdout: bool = False  # e.g. the audit trail of a benchmark: written, not kept
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> Process:
        self._log = self.log_path.open("ab")
        env = {**os.environ, **(self.env or {})}
        stdout = subprocess.DEVNULL if self.discard_stdout else self._log
        self.proc = subprocess.Popen(self.argv, stdout=stdout, stderr=self._log,
                                     env=env, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = e.code
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: {url} not ready after {timeout}s ({last})\n"
                           f"{self.output()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


class LogWatch:
    """The extauthz log's new JSON lines, read from where the last call stopped (the file is
    opened fresh each time: it is written by another process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def _records(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits
        self._offset += len(complete)
        out = []
        for line in complete.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "logger" in record:  # not an audit record
                    out.append(record)
        return out

    def policy_news(self) -> list[str]:
        """What a person editing demo/policies.yaml needs to see: the edit was refused (and
        why, naming the file and the policy), or it applied; and what a dry-run rule would
        have denied."""
        news = []
        for r in self._records():
            message = str(r.get("message", ""))
            policies = r.get("logger") == "extauthz.follow" and message.startswith("policies:")
            dry_run = r.get("logger") == "extauthz.authorize" and message.startswith("dry-run ")
            if not (policies or dry_run):
                continue  # the demo issuer's minutely UNSAFE line stays in the log file
            level = str(r.get("level", "info"))
            news.append(f"extauthz {level.upper()}: {message}" if level != "info"
                        else f"extauthz: {message}")
        return news
