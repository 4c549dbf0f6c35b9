"""Start-up refusals as an operator meets them: the installed ``extauthz serve`` exits 2 with
one line naming the key or variable and the fix, never a traceback, and never serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.ports import free_port

EXTAUTHZ = str(Path(sys.executable).parent / "extauthz")  # the console script pip installed


def serve(tmp_path: Path, config: dict[str, object] | None = None,
          env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    """``extauthz serve`` on free loopback ports; a config that starts would be killed by the
    timeout, so every caller here expects a refusal."""
    argv = [EXTAUTHZ, "serve", "--grpc-listen", f"127.0.0.1:{free_port()}",
            "--http-listen", f"127.0.0.1:{free_port()}", *args]
    if config is not None:
        cfg = tmp_path / "extauthz.yaml"
        cfg.write_text(yaml.safe_dump({"store": {"state_file": str(tmp_path / "state.json")},
                                       **config}))
        argv += ["--config", str(cfg)]
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("EXTAUTHZ_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path,
                          env={**base, **(env or {})}, check=False)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refused start."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_misspelled_environment_variable_stops_the_installed_serve(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, env={"EXTAUTHZ_DEFAULT_ACTON": "deny"}))
    assert line == ("extauthz: config: unknown environment variable EXTAUTHZ_DEFAULT_ACTON: "
                    "did you mean EXTAUTHZ_DEFAULT_ACTION (key 'default_action')? "
                    "Rename or unset it")


def test_a_header_prefix_that_would_strip_content_type_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, env={"EXTAUTHZ_HEADERS_PREFIX": "content-"}))
    assert line.startswith("extauthz: config: 'headers.prefix' is 'content-'; write x-NAME-")


def test_a_header_prefix_inside_x_forwarded_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, {"headers": {"prefix": "x-forwarded-"}}))
    assert line == ("extauthz: config: 'headers.prefix' 'x-forwarded-' would remove the "
                    "x-forwarded-for header from every request; choose another, e.g. x-auth-")
