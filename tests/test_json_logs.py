"""Log lines a log pipeline can read (issue 16): ``extauthz serve`` with its stderr not a
terminal writes one JSON object per line, every line, gRPC core's own included; a line
written while deciding names the decision; a broken policy edit is logged naming the file
and the policy; audit records stay one JSON object per decision on stdout."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import yaml

from extauthz.engine import build_engine
from extauthz.telemetry.logs import JsonFormatter, resolve_format
from tests.support.issuer import LocalIssuer
from tests.support.poll import until
from tests.support.ports import free_port, wait_for_http
from tests.support.requests import CHECK, check_request, request_view
from tests.support.settings import make_settings

DOCS = "id: docs\nmatch: {paths: [{prefix: /docs/}]}\nrequire: {authenticated: false}\n"
TRIAL = "id: trial\nmatch: {paths: [{prefix: /trial/}]}\nmode: dry-run\n"  # would deny: no token
BROKEN = "id: users\nmatch: {paths: [{regex: '(a'}]}\n"


def _serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, int]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "docs.yaml").write_text(DOCS)
    (policies / "trial.yaml").write_text(TRIAL)
    grpc_port, http_port = free_port(), free_port()
    ports = {free_port() for _ in range(4)} - {grpc_port, http_port}
    admin_port, check_http_port = sorted(ports)[:2]
    config = tmp_path / "extauthz.yaml"
    config.write_text(yaml.safe_dump({
        "grpc": {"listen": f"127.0.0.1:{grpc_port}"},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "check_http": {"listen": f"127.0.0.1:{check_http_port}"},
        "store": {"url": f"file://{policies}/", "state_file": str(tmp_path / "state.json")},
        "shutdown_grace": 1}))
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("EXTAUTHZ_")}
    with (tmp_path / "stdout").open("wb") as out, (tmp_path / "stderr").open("wb") as err:
        process = subprocess.Popen(  # stderr and stdout to files: neither is a terminal
            [sys.executable, "-m", "extauthz", "serve", "--config", str(config)],
            stdout=out, stderr=err, env={**inherited, **env}, start_new_session=True)
    wait_for_http(f"http://127.0.0.1:{http_port}/readyz")
    return process, grpc_port, http_port


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line as JSON: a bare-text line fails the test, naming it."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line on {path.name}: {line!r}") from None
    return out


def test_serve_logs_only_json_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    # gRPC core told to be as loud as it can: its lines must not reach stderr as text
    process, grpc_port, _ = _serve(tmp_path, {"GRPC_VERBOSITY": "debug", "GRPC_TRACE": "api,http"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            channel.unary_unary(CHECK)(check_request({}, path="/trial/x"), timeout=5)
        (tmp_path / "policies" / "users.yaml").write_text(BROKEN)  # a broken edit, reloaded
        until(lambda: "users.yaml" in (tmp_path / "stderr").read_text(), timeout=10)
    finally:
        _stop(process)

    logged = _lines(tmp_path / "stderr")
    assert logged, "nothing logged"
    for record in logged:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["time"].endswith("Z")
    audit = _lines(tmp_path / "stdout")
    assert [a["path"] for a in audit] == ["/trial/x"]  # one audit object per decision

    trial = [r for r in logged if "dry-run policy trial would deny" in r["message"]]
    assert len(trial) == 1
    assert trial[0]["decision_id"] == audit[0]["decision_id"]  # the line names its decision
    assert all("decision_id" not in r for r in logged if r is not trial[0])

    reload = [r for r in logged if "users.yaml" in r["message"]]
    assert reload[0]["level"] == "warning"
    assert f"{tmp_path / 'policies' / 'users.yaml'}: policy 'users': 'match.paths[0].regex'" \
        in reload[0]["message"]


def test_text_on_a_terminal_json_elsewhere_unless_configured(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, (tmp_path / "f").open("w") as file:
        assert (resolve_format(None, terminal), resolve_format(None, file)) == ("text", "json")
        assert resolve_format("json", terminal) == "json"
        assert resolve_format("text", file) == "text"
    os.close(leader)


async def test_only_lines_written_while_deciding_carry_the_decision_id(
        tmp_path: Path, idp: LocalIssuer) -> None:
    """One task deciding twice (a plain-HTTP connection answers its pipelined requests in one
    task): a line after a decision names no decision, the next decision's lines name it."""
    (tmp_path / "p.yaml").write_text(TRIAL)
    engine = build_engine(make_settings(idp, store={"url": f"file://{tmp_path}/p.yaml"}),
                          worker=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
        await engine.load_once()
        first = await engine.authorizer.check(request_view("/trial/1"))
        logging.getLogger("extauthz.check_http").warning("after the first")
        second = await engine.authorizer.check(request_view("/trial/2"))
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous)
        await engine.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    named = [(r["message"].split()[-1], r.get("decision_id")) for r in lines
             if r["message"].startswith("dry-run policy trial")]
    assert named == [(first.decision_id, first.decision_id), (second.decision_id, second.decision_id)]
    after = next(r for r in lines if r["message"] == "after the first")
    assert "decision_id" not in after
