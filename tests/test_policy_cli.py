"""`extauthz policy …` as an operator types it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer

POLICIES = """\
id: admin-api
match:
  paths: [{prefix: /admin/}]
require:
  scopes: [admin:write]
---
id: public
match:
  paths: [{prefix: /}]
require: {authenticated: false}
"""


def _config(tmp_path: Path, idp: LocalIssuer, store: dict[str, Any]) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"store": store, "default_action": "deny", "issuers": [
        {"issuer": idp.issuer, "audiences": [AUDIENCE]}]}))
    return cfg


@pytest.fixture(params=["file", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path, idp: LocalIssuer) -> Path:
    """Either store: what reads and validates works on both."""
    if request.param == "redis":
        return request.getfixturevalue("redis_config")  # type: ignore[no-any-return]
    return _config(tmp_path, idp, {"url": f"file://{tmp_path}/policies.yaml"})


@pytest.fixture
def redis_config(tmp_path: Path, idp: LocalIssuer, redis_server: Any) -> Path:
    """A Redis store: the one `policy apply` and `delete` write to (a file store is the
    source of truth and edited as a file)."""
    return _config(tmp_path, idp, {"url": redis_server.url, "prefix": f"cli{tmp_path.name[-6:]}:"})


def store_policies(config: Path, text: str) -> None:
    """Put policies in the configured store as an operator does: `apply` for Redis, an edit
    of the file for a file store."""
    url = yaml.safe_load(config.read_text())["store"]["url"]
    if url.startswith("file://"):
        Path(url[len("file://"):]).write_text(text)
    else:
        assert run_cli(config, "policy", "apply", "-f", "-", stdin=text).returncode == 0


def test_apply_then_list_get_and_delete(redis_config: Path, tmp_path: Path) -> None:
    config = redis_config
    source = tmp_path / "in.yaml"
    source.write_text(POLICIES)
    applied = run_cli(config, "policy", "apply", "-f", str(source))
    assert applied.returncode == 0, applied.stderr
    assert "+ create admin-api" in applied.stdout
    assert "applied 2 policies" in applied.stdout

    listed = run_cli(config, "policy", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "HOSTS", "PATHS", "METHODS", "ACTION", "MODE"]
    assert listed[1].split() == ["admin-api", "*", "prefix:/admin/", "*", "allow", "enforce"]

    got = yaml.safe_load(run_cli(config, "policy", "get", "admin-api").stdout)
    assert got["require"]["scopes"] == ["admin:write"]

    again = run_cli(config, "policy", "apply", "-f", str(source))
    assert "= unchanged admin-api" in again.stdout

    assert run_cli(config, "policy", "delete", "admin-api").returncode == 0
    missing = run_cli(config, "policy", "delete", "admin-api")
    assert missing.returncode == 2
    assert "no policy with id 'admin-api'" in missing.stderr


def test_dry_run_shows_the_diff_and_stores_nothing(config: Path) -> None:
    store_policies(config, POLICIES)
    changed = POLICIES.replace("admin:write", "admin:all")
    result = run_cli(config, "policy", "apply", "-f", "-", "--dry-run", stdin=changed)
    assert result.returncode == 0
    assert "~ update admin-api" in result.stdout
    assert "-  - admin:write" in result.stdout
    assert "+  - admin:all" in result.stdout
    assert "dry run: nothing stored" in result.stdout
    assert "admin:write" in run_cli(config, "policy", "get", "admin-api").stdout


def test_a_batch_with_one_bad_document_stores_nothing(config: Path) -> None:
    bad = POLICIES + "---\nid: broken\nmatch: {methdos: [GET]}\n"
    result = run_cli(config, "policy", "apply", "-f", "-", stdin=bad)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("unknown key 'match.methdos': did you mean 'methods'?")
    assert "Traceback" not in result.stderr
    assert run_cli(config, "policy", "list").stdout.splitlines()[1:] == []


def test_a_directory_is_applied_as_one_batch(redis_config: Path, tmp_path: Path) -> None:
    config = redis_config
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.yaml").write_text("id: a\n")
    (d / "b.json").write_text('[{"id": "b"}, {"id": "c"}]')
    (d / "notes.txt").write_text("ignored")
    result = run_cli(config, "policy", "apply", "-f", str(d))
    assert "applied 3 policies" in result.stdout, result.stderr


def test_validate_names_the_field_and_never_needs_a_store(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("{}\n")
    ok = run_cli(cfg, "policy", "validate", "-f", "-", stdin=POLICIES)
    assert (ok.returncode, ok.stdout.strip()) == (0, "2 valid: admin-api, public")
    bad = run_cli(cfg, "policy", "validate", "-f", "-", stdin="id: x\nmatch: {paths: [{regex: '('}]}\n")
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith(
        "stdin: policy 'x': 'match.paths[0].regex' is '(', which RE2 refuses (missing ): (): "
        "write an RE2 regex (no backreferences, lookaround or possessive quantifiers)")
    assert len(bad.stderr.strip().splitlines()) == 1  # no RE2 log lines on stderr


def test_without_a_store_the_cli_says_how_to_configure_one(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("{}\n")
    result = run_cli(cfg, "policy", "list")
    assert result.returncode == 2
    assert "no policy store configured: set store.url" in result.stderr
    assert "--config FILE" in result.stderr


def test_explain_shows_the_match_the_others_and_the_decision(config: Path, idp: LocalIssuer) -> None:
    store_policies(config, POLICIES)
    token = idp.mint("ES256", scope="read")
    result = run_cli(config, "policy", "explain", "--host", "api.example.com:443", "--method", "post",
                 "--path", "/admin/users?x=1", "--token", token)
    out = result.stdout
    assert result.returncode == 1, result.stderr
    assert "request: POST api.example.com/admin/users?x=1" in out
    assert "admin-api: MATCHED: any host, prefix /admin/" in out
    assert "public: matches, but admin-api takes precedence" in out
    assert "decision: DENY 403 (scope_missing): requirement not met: scope admin:write" in out
    allowed = run_cli(config, "policy", "explain", "--host", "h", "--path", "/docs", "--token", token)
    assert allowed.returncode == 0
    assert "decision: ALLOW (allowed)" in allowed.stdout
    assert "upstream header x-auth-subject: alice" in allowed.stdout


@pytest.mark.parametrize(("host", "path", "why"), [
    ("api.example.com:1:1", "/admin/x", "the Host has a port"),
    ("api.example.com", "/admin/%2e%2e;/docs/", "a dot segment hidden"),
    ("api.example.com", "/admin%2Fusers", "the path reads under another policy"),
])
def test_explain_refuses_an_ambiguous_request_as_the_service_does(
    config: Path, host: str, path: str, why: str,
) -> None:
    store_policies(config, POLICIES)
    result = run_cli(config, "policy", "explain", "--host", host, "--path", path)
    assert result.returncode == 1, result.stderr
    assert "decision: DENY 400 (bad_request): " + why in result.stdout
    assert result.stderr == ""


def test_explain_shows_the_dry_run_shadow_beside_the_enforcing_decision(
    config: Path, idp: LocalIssuer
) -> None:
    trial = "---\nid: users-trial\nmatch: {paths: [{prefix: /admin/users/}]}\nmode: dry-run\n"
    store_policies(config, POLICIES + trial)
    result = run_cli(config, "policy", "explain", "--host", "h", "--path", "/admin/users/1")
    out = result.stdout
    assert result.returncode == 1, result.stderr
    assert "admin-api: MATCHED: any host, prefix /admin/" in out
    assert ("users-trial: DRY-RUN: any host, prefix /admin/users/; evaluated and logged only, "
            "admin-api decides") in out
    assert "decision: DENY 401 (token_missing)" in out
    assert "  dry-run: policy users-trial would deny (token_missing); it does not decide" in out
    token = idp.mint("ES256", scope="admin:write")
    allowed = run_cli(config, "policy", "explain", "--host", "h", "--path", "/admin/users/1",
                      "--token", token)
    assert allowed.returncode == 0
    assert "decision: ALLOW (allowed)" in allowed.stdout
    assert "  dry-run: policy users-trial would allow; it does not decide" in allowed.stdout
