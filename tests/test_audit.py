"""The audit trail: one JSON line per decision, no secrets anywhere, tail and export."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from extauthz.audit import FIELDS
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz, Gateway


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extauthz", "audit", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_every_decision_is_one_line_with_no_secret_and_readable_across_replicas(tmp_path: Path) -> None:
    idp = LocalIssuer()
    redis = RedisServer(tmp_path / "redis").start()
    (tmp_path / "p.yaml").write_text("id: admin\nmatch: {paths: [{prefix: /admin/}]}\n"
                                     "require: {claims: {groups: [root]}}\n")
    store = {"url": redis.url, "prefix": "aud:"}
    service = ExtAuthz(tmp_path, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}], "store": store,
        "audit": {"redis_stream": True, "flush_interval": 0.05}, "token": {"cookie": "session"},
        "default_action": "authenticated"}, args=["--workers", "2"])
    # Redis holds the policies here: apply them first
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store}))
    applied = subprocess.run([sys.executable, "-m", "extauthz", "policy", "apply", "-f",
                              str(tmp_path / "p.yaml"), "--config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert applied.returncode == 0, applied.stderr
    service.start()
    gateway = Gateway(tmp_path, service).start()
    secrets: list[str] = []
    try:
        alice = idp.mint("ES256", jti="alice-token")
        bob = idp.mint("ES256", sub="bob", email="bob@example.com")
        secrets += [alice, bob, alice.split(".")[2], bob.split(".")[2]]
        requests = [
            ("/ok?secret_query=hunter2", {"authorization": f"Bearer {alice}"}, 200),
            ("/admin/x", {"authorization": f"Bearer {alice}"}, 403),
            ("/x", {"cookie": f"session={bob}; other=1"}, 200),
            ("/x", {"authorization": "Bearer not.a.token"}, 401),
            ("/x", {}, 401),
        ]
        for i, (path, headers, want) in enumerate(requests):
            assert gateway.get(path, {**headers, "x-request-id": f"rid-{i}"}).status == want
        time.sleep(0.5)

        assert service.process is not None
        out = service.process.output()
        lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith('{"time"')]
        assert len(lines) == len(requests)
        for line in lines:
            assert tuple(line) == FIELDS
        first = next(ln for ln in lines if ln["request_id"] == "rid-0")
        assert first["decision"] == "allow"
        assert (first["subject"], first["issuer"], first["client_id"]) == ("alice", idp.issuer, "cli")
        assert (first["method"], first["path"], first["status"]) == ("GET", "/ok", 200)
        assert first["source"]  # Envoy's peer address
        denied = next(ln for ln in lines if ln["path"] == "/admin/x")
        assert (denied["decision"], denied["reason"], denied["policy"]) == (
            "deny", "claim_mismatch", "admin")

        everything = out + gateway.procs[1].output()
        for secret in [*secrets, "hunter2", "not.a.token"]:
            assert secret not in everything

        tail = cli(config, "tail", "--subject", "alice", "--decision", "deny")
        assert tail.returncode == 0, tail.stderr
        tailed = [json.loads(ln) for ln in tail.stdout.splitlines()]
        assert [(t["path"], t["reason"]) for t in tailed] == [("/admin/x", "claim_mismatch")]

        export = cli(config, "export", "--since", "5m", "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(export.stdout)))
        assert len(rows) == len(requests)
        assert {r["decision"] for r in rows} == {"allow", "deny"}
        assert cli(config, "export", "--since=-5m", "--until", "4m").stdout.count("\n") == 1
        bad = cli(config, "export", "--since", "yesterday")
        assert bad.returncode == 2
        assert "time 'yesterday': write 2026-11-23T10:00:00Z" in bad.stderr
    finally:
        gateway.stop()
        service.stop()
        redis.stop()
        idp.close()


def test_the_audit_commands_say_they_need_redis(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    result = cli(config, "tail")
    assert result.returncode == 2
    assert "the audit trail is read from Redis" in result.stderr


def test_the_fast_line_format_is_json_dumps_byte_for_byte() -> None:
    import dataclasses

    from extauthz import decision as d
    from extauthz.audit import LineFormat, audit_record
    from extauthz.identity.model import Identity
    from extauthz.request import RequestView

    ident = Identity(issuer="https://idp.example/é", subject='al"ice\\', username="alice",
                     email=None, audiences=("api",), groups=("dev",), scopes=(), client_id="cli",
                     acr="phr", auth_time=1700000000, jti="j1", issued_at=1.0, expires_at=2.0,
                     claims={})  # type: ignore[arg-type]
    view = RequestView(method="GET", scheme="https", host="h.example", path="/p?secret=1",
                       query="", headers={}, context_extensions={}, source_address="203.0.113.7",
                       request_id="r\n1")
    decisions = [
        d.allow("id-1", ident, reason="allowed", description="allowed", upstream_headers=(),
                remove_headers=(), policy_id="p1"),
        d.allow("id-2", dataclasses.replace(ident, acr=None), reason="dry_run", description="x",
                upstream_headers=(), remove_headers=(), policy_id="p☃", would_deny="claim_mismatch"),
        d.forbidden("id-3", reason="no_policy", description="no policy allows this request"),
    ]
    fmt = LineFormat()
    for now in (1700000000.0, 1700000000.5004, 1700000001.9876, 1700000000.9999996, 1700000002.9994999):
        for decision in decisions:
            for v in (view, None):
                for _ in range(2):  # the second time from the kept parts
                    want = json.dumps(audit_record(decision, v, now), separators=(",", ":"))
                    assert fmt.line(decision, v, now) == want
