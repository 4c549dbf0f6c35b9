"""The ``extauthz`` command line as an operator runs it: a subprocess, its exit status and its
two streams. One runner for every test, so each says only what it runs and with which config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

EXTAUTHZ = (sys.executable, "-m", "extauthz")  # this interpreter's package
INSTALLED = (str(Path(sys.executable).parent / "extauthz"),)  # the console script pip installed


def run_cli(config: Path | None, *args: str, stdin: str | None = None,
            env: Mapping[str, str] | None = None, program: Sequence[str] = EXTAUTHZ,
            timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``extauthz ARGS [--config CONFIG]``, never raising on a non-zero exit.

    The caller's own ``EXTAUTHZ_*`` variables never reach the command (a developer's shell
    must not change what a test sees); ``env`` adds to what is left.
    """
    argv = [*program, *args, *(["--config", str(config)] if config is not None else [])]
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("EXTAUTHZ_")}
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**inherited, **(env or {})}, check=False)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a command that refused its input (exit status 2, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
