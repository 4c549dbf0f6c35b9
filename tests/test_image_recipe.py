"""The Dockerfile, linted, and its recipe run without a container engine: the wheel (with
stubs and page assets) installed into a fresh venv from the lock, started as the image's
ENTRYPOINT + CMD, answering /healthz."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from demo.processes import Process
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


def test_the_recipe_builds_installs_and_serves(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("extauthz-*.whl")
    [sdist] = dist.glob("extauthz-*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for needed in ("extauthz/pb/envoy/service/auth/v3/external_auth_pb2.py",
                   "extauthz/stepup/assets/webauthn.js", "extauthz/stepup/assets/layout.html",
                   "extauthz/py.typed"):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert any(m.endswith("extauthz/pb/envoy/service/auth/v3/external_auth_pb2.py") for m in members)
    assert any(m.endswith("extauthz/stepup/assets/webauthn.js") for m in members)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.lock")], check=True,
                   capture_output=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, capture_output=True, timeout=120)

    http_port = free_port()
    service = Process("image", [str(venv / "bin" / "extauthz"), "serve"], tmp_path / "image.log",
                      env={"EXTAUTHZ_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
                           "EXTAUTHZ_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                           "EXTAUTHZ_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",  # not :9004
                           "EXTAUTHZ_STORE_STATE_FILE": str(tmp_path / "state.json")}).start()
    try:
        service.wait_http(f"http://127.0.0.1:{http_port}/healthz")
        service.wait_http(f"http://127.0.0.1:{http_port}/readyz")
    finally:
        assert service.stop() == 0
