"""`make demo` runs `python -m demo`; its --check mode proves the printed curl lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e
DEMO = (sys.executable, "-m", "demo")  # what `make demo` runs, from the repository's root
REPO = Path(__file__).resolve().parents[1]
FROM_ANYWHERE = {"PYTHONPATH": str(REPO)}  # the demo is not installed: it lives in the checkout


PORTS = ("gateway", "grpc", "http", "check-http", "upstream", "admin")


@pytest.mark.parametrize("transport", [None, "grpc"], ids=["default-http", "grpc"])
def test_the_demo_starts_and_its_curl_lines_answer_as_printed(
    tmp_path: Path, transport: str | None,
) -> None:
    args = [f"--{name}-port={free_port()}" for name in PORTS]
    if transport:
        args.append(f"--transport={transport}")
    result = run_cli(None, "--check", *args, program=DEMO, timeout=120, cwd=tmp_path,
                     env=FROM_ANYWHERE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"demo check: ok (Envoy asked extauthz over {(transport or 'http').upper()})" in result.stdout
    assert (tmp_path / ".extauthz" / "demo-issuer-key.pem").exists()


def test_the_demo_names_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        busy = s.getsockname()[1]
        others = [f"--{n}-port={free_port()}" for n in PORTS[1:]]
        result = run_cli(None, "--check", f"--gateway-port={busy}", *others, program=DEMO,
                         cwd=tmp_path, env=FROM_ANYWHERE)
    assert result.returncode == 2
    assert f"demo: gateway port {busy} in use; stop what holds it" in result.stderr
