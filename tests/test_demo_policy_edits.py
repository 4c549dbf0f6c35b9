"""`make demo` tells the person editing its policy file what became of the edit, in the
terminal they ran it from (issue 16): a broken edit is shown with the file and the policy,
and the next good one as applied. Not only in .demo/extauthz.log."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
PORTS = ("gateway", "grpc", "http", "check-http", "upstream", "admin")


class Terminal:
    """What the demo prints, read as it comes (raw reads: no buffer hides a line from select)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process, self.fd, self.text = process, process.stdout.fileno(), ""

    def until(self, needle: str, timeout: float = 90) -> str:
        """The first complete line holding ``needle`` printed since the last call's line."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.text.split("\n")
            for i, line in enumerate(lines[:-1]):
                if needle in line:
                    self.text = "\n".join(lines[i + 1:])
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} in:\n{self.text}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"the demo ended ({self.process.poll()}):\n{self.text}"
                self.text += chunk.decode(errors="replace")


def test_a_policy_edit_and_a_dry_run_denial_are_shown_in_the_demos_terminal(tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    good = (REPO / "demo" / "policies.yaml").read_text()
    policies.write_text(good)
    ports = {name: free_port() for name in PORTS}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", *args, f"--policies={policies}"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    terminal = Terminal(process)
    try:
        token = terminal.until("  TOKEN=").split("=", 1)[1].strip()
        terminal.until("Ctrl-C stops everything.")

        # the banner's dry-run line: still allowed, and the terminal says what it would deny
        request = urllib.request.Request(f"http://127.0.0.1:{ports['gateway']}/v1/users/bob",
                                         headers={"authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            assert answer.status == 200
        assert "new-rule-trial would deny (scope_missing)" in terminal.until("dry-run policy")

        policies.write_text(good + "---\nid: broken\nmatch: {hosts: ['api.example.com:443']}\n")
        line = terminal.until("extauthz WARNING: policies:")
        assert f"{policies}: policy 'broken': 'match.hosts[0]' is 'api.example.com:443': " \
               "leave the port out" in line
        assert "(keeping revision" in line  # and the demo keeps serving the last good set

        policies.write_text(good + "---\nid: fixed\nmatch: {hosts: [api.example.com]}\n")
        assert "policies (from the store)" in terminal.until("extauthz: policies: revision")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
