"""The ``extauthz`` command as an operator meets it (issue 16): where it finds its config,
what it says when something is wrong, and that it never writes what it must not. Every
command runs as a subprocess of the installed console script."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.cli import _parser
from extauthz.stepup.store import FileStepupStore, RedisStepupStore, StepupStore, user_key
from tests.support.cli import INSTALLED, refused, run_cli
from tests.support.clock import FakeClock

ISSUER = "https://idp.example.com"
POLICY = "# the team's note\nid: docs\nmatch: {paths: [{prefix: /docs/}]}\nrequire: {authenticated: false}\n"


def cli(config: Path | None, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(config, *args, program=INSTALLED, **kw)


def _file_store(tmp_path: Path, name: str = "c.yaml", policies: str = "policies.yaml") -> Path:
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump({
        "store": {"url": f"file://{tmp_path / policies}", "state_file": str(tmp_path / "state.json")},
        "issuers": [{"issuer": ISSUER, "audiences": ["api"]}]}))
    return cfg


# --- where the config comes from -------------------------------------------------------------

def test_a_config_given_before_the_command_is_read_as_kubectl_reads_its_global_flags(
        tmp_path: Path) -> None:
    config = _file_store(tmp_path)
    (tmp_path / "policies.yaml").write_text(POLICY)
    before = cli(None, "--config", str(config), "policy", "list")
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines()[1].split()[0] == "docs"
    after = cli(config, "policy", "list")  # `<command> --config FILE` keeps working
    assert after.stdout == before.stdout


def test_the_config_is_the_flag_else_the_environment_else_extauthz_yaml_here(tmp_path: Path) -> None:
    for name in ("flag", "env", "here"):
        (tmp_path / f"{name}.yaml").write_text(f"id: from-{name}\n")
        _file_store(tmp_path, f"{name}-config.yaml", f"{name}.yaml")
    (tmp_path / "extauthz.yaml").write_text((tmp_path / "here-config.yaml").read_text())

    def listed(*args: str, env: dict[str, str] | None = None) -> str:
        done = cli(None, *args, "policy", "list", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[1].split()[0]

    env = {"EXTAUTHZ_CONFIG": str(tmp_path / "env-config.yaml")}
    assert listed() == "from-here"
    assert listed(env=env) == "from-env"
    assert listed("--config", str(tmp_path / "flag-config.yaml"), env=env) == "from-flag"


def test_with_no_config_anywhere_the_message_says_how_to_give_one(tmp_path: Path) -> None:
    line = refused(cli(None, "policy", "list", cwd=tmp_path))
    assert "no policy store configured" in line
    assert "--config FILE" in line
    assert "$EXTAUTHZ_CONFIG" in line
    assert "./extauthz.yaml" in line


# --- webauthn --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["file", "redis"])
def test_webauthn_unlock_lifts_a_users_pause_and_logs_who_did_it(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    config = _file_store(tmp_path)
    store: StepupStore = FileStepupStore(str(tmp_path / "state.json"), FakeClock())
    if kind == "redis":
        url, prefix = request.getfixturevalue("redis_server").url, f"unlock{tmp_path.name[-6:]}:"
        config.write_text(yaml.safe_dump({"store": {"url": url, "prefix": prefix},
                                          "issuers": [{"issuer": ISSUER, "audiences": ["api"]}]}))
    user = user_key(ISSUER, "alice")

    async def failures(add: int) -> int:
        s = RedisStepupStore(url, prefix, 2) if kind == "redis" else store
        try:
            for _ in range(add):
                await s.add_failure(user, 900)
            return await s.failures(user)
        finally:
            await s.close()

    assert asyncio.run(failures(6)) == 6  # past stepup.max_failures (5): paused
    done = cli(config, "webauthn", "unlock", "--user", "alice")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"unlocked alice ({ISSUER}): 6 failed confirmation(s) forgotten")
    assert asyncio.run(failures(0)) == 0
    logged = [json.loads(line) for line in done.stderr.splitlines()]  # not a terminal: JSON
    assert [(r["level"], r["logger"]) for r in logged] == [("warning", "extauthz.admin")]
    assert "'alice'" in logged[0]["message"]
    assert "unlocked by" in logged[0]["message"]


def test_webauthn_list_of_a_user_with_no_passkey_is_an_empty_table(tmp_path: Path) -> None:
    done = cli(_file_store(tmp_path), "webauthn", "list", "--subject", "nobody")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.split() == ["ISSUER", "ID", "NAME", "CREATED", "LAST", "USED"]


# --- policy errors name the file and the policy ----------------------------------------------

BROKEN = {
    "a bad regex": ("id: users\nmatch: {paths: [{regex: '(a'}]}\n", "users",
                    "'match.paths[0].regex' is '(a', which RE2 refuses"),
    "a prefix without a slash": ("id: admin\nmatch: {paths: [{prefix: admin/}]}\n", "admin",
                                 "'match.paths[0].prefix' is 'admin/': a path starts with '/'"),
    "a host with a port": ("id: api\nmatch: {hosts: ['api.example.com:443']}\n", "api",
                           "'match.hosts[0]' is 'api.example.com:443': leave the port out"),
    "a reserved header": ("id: tenant\nheaders: {x-auth-user: '{claims.sub}'}\n", "tenant",
                          "'headers.x-auth-user' is reserved"),
}


@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("command", ["validate", "apply"])
def test_every_policy_error_names_the_file_and_the_policy(
        tmp_path: Path, case: str, command: str) -> None:
    text, pid, problem = BROKEN[case]
    d = tmp_path / "policies"
    d.mkdir()
    (d / "a-good.yaml").write_text(POLICY)
    (d / "b-broken.yaml").write_text(text)
    line = refused(cli(_file_store(tmp_path), "policy", command, "-f", str(d)))
    assert line.startswith(f"extauthz: {d / 'b-broken.yaml'}: policy '{pid}': {problem}"), line


@pytest.mark.parametrize("what", ["policy", "config"])
def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path: Path, what: str) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: docs\nmatch: {paths: [{prefix: /docs/}]\nmode: enforce\n")
    if what == "policy":
        line = refused(cli(None, "policy", "validate", "-f", str(broken)))
        assert line.startswith(f"extauthz: {broken}:3:1: not valid YAML or JSON: "), line
    else:
        line = refused(cli(broken, "policy", "list"))
        assert line.startswith(f"extauthz: config: {broken}:3:1: not valid YAML: "), line


@pytest.mark.parametrize("what", ["policy", "config", "store"])
def test_a_file_saved_in_another_encoding_is_one_line_with_file_line_and_column(
        tmp_path: Path, what: str) -> None:
    latin1 = "id: docs\ndescription: caf\u00e9\n".encode("latin-1")  # é is 0xe9, not UTF-8
    if what == "config":
        config = tmp_path / "c.yaml"
        config.write_bytes(b"log_level: info\n# caf\xe9\n")
        line = refused(cli(config, "policy", "list"))
        assert line == (f"extauthz: config: {config}:2:6: not UTF-8 text (byte 0xe9); save the "
                        "file as UTF-8")
        return
    d = tmp_path / "policies"
    d.mkdir()
    (d / "docs.yaml").write_bytes(latin1)
    args = ("validate", "-f", str(d)) if what == "policy" else ("list",)
    line = refused(cli(_file_store(tmp_path, policies="policies/"), "policy", *args))
    assert line.endswith(f"{d / 'docs.yaml'}:2:17: not UTF-8 text (byte 0xe9); save the file "
                         "as UTF-8"), line


# --- a file store is edited as a file --------------------------------------------------------

def test_policy_apply_to_a_file_store_writes_nothing_and_names_the_file_to_edit(tmp_path: Path) -> None:
    config = _file_store(tmp_path)
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICY)
    new = tmp_path / "new.yaml"
    new.write_text("id: admin\nmatch: {paths: [{prefix: /admin/}]}\n")
    before = sorted(p.name for p in tmp_path.iterdir())

    line = refused(cli(config, "policy", "apply", "-f", str(new)))
    assert f"the policies are in file {policies}" in line
    assert f"nothing was written. Edit {policies}" in line
    assert policies.read_text() == POLICY  # the comment and the layout kept
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no lock file left behind
    assert "edit" in refused(cli(config, "policy", "delete", "docs")).lower()

    # reading keeps working
    assert cli(config, "policy", "validate", "-f", str(new)).stdout.strip() == "1 valid: admin"
    assert cli(config, "policy", "list").stdout.splitlines()[1].split()[0] == "docs"
    assert yaml.safe_load(cli(config, "policy", "get", "docs").stdout)["id"] == "docs"
    explained = cli(config, "policy", "explain", "--host", "h", "--path", "/docs/a")
    assert "docs: MATCHED" in explained.stdout
    dry = cli(config, "policy", "apply", "-f", str(new), "--dry-run")
    assert dry.returncode == 0
    assert "+ create admin" in dry.stdout
    assert policies.read_text() == POLICY


# --- refusals and pipes ----------------------------------------------------------------------

def test_revoking_a_token_until_a_past_time_is_refused_in_one_line(tmp_path: Path) -> None:
    past = str(int(time.time()) - 60)
    line = refused(cli(_file_store(tmp_path), "revoke", "token", "--jti", "j1", "--expires-at", past))
    assert line == (f"extauthz: --expires-at {past} is not in the future; the service already "
                    "refuses a token past its exp")


@pytest.mark.parametrize("sub", ["", " ", "alice "])
def test_a_token_for_an_empty_or_padded_subject_is_refused(tmp_path: Path, sub: str) -> None:
    done = cli(None, "token", "--sub", sub, cwd=tmp_path)
    assert done.stdout == ""
    assert "--sub" in refused(done)
    assert "empty or has stray whitespace" in refused(done)


def test_a_token_that_would_be_born_expired_is_refused(tmp_path: Path) -> None:
    done = cli(None, "token", "--sub", "alice", "--ttl", "-5", cwd=tmp_path)
    assert done.stdout == ""
    assert refused(done) == "extauthz: --ttl -5: a token must live at least 1 second"


def test_audit_tail_of_no_decisions_is_refused_before_reading_anything() -> None:
    done = cli(None, "audit", "tail", "--count", "0")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("error: argument --count: 0: give at least 1")


def test_validating_an_empty_stdin_is_refused_not_zero_valid() -> None:
    assert refused(cli(None, "policy", "validate", "-f", "-", stdin="")) == (
        "extauthz: stdin: holds no policy documents")


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    """``extauthz … | head -1``: a real pipe, whose reader goes away after one line."""
    config = _file_store(tmp_path)
    (tmp_path / "policies.yaml").write_text("".join(
        f"---\nid: p{i}\nmatch: {{paths: [{{prefix: /p{i}/}}]}}\n" for i in range(3000)))
    done = subprocess.run(
        ["/bin/bash", "-c", f'{INSTALLED[0]} policy list --config "$1" | head -1; '
                       'echo "status ${PIPESTATUS[0]}" >&2', "sh", str(config)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.split() == ["ID", "HOSTS", "PATHS", "METHODS", "ACTION", "MODE"]
    assert done.stderr.strip() == "status 141"  # as `cat` ends on a closed pipe; no traceback


# --- help ------------------------------------------------------------------------------------

def _without_help(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if name not in helped:
                    missing.append(f"{path} {name}")
                missing += _without_help(sub, f"{path} {name}")
        elif action.help is None:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_option_has_help_text() -> None:
    assert _without_help(_parser(), "extauthz") == []


def test_bench_help_lists_every_option_and_how_make_passes_them() -> None:
    from benchmarks.cli import parser

    assert _without_help(parser(), "bench") == []
    shown = cli(None, "bench", "--help")
    assert shown.returncode == 0, shown.stderr
    assert 'make bench BENCH_ARGS="--quick"' in shown.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`--quick` takes about two minutes" in readme  # --quick, said the same in both
    assert shown.stdout.count("about two minutes") == 2  # the help line and the example
    for action in parser()._actions:
        for flag in action.option_strings:
            assert flag in shown.stdout


def test_audit_export_into_head_ends_quietly_when_head_has_enough(
        tmp_path: Path, redis_server: Any) -> None:
    """``extauthz audit export | head -3`` over a real pipe and a real stream of decisions."""
    from extauthz.audit.record import FIELDS

    prefix = f"pipe{tmp_path.name[-6:]}:"
    client = redis_server.client()
    pipe = client.pipeline()
    for i in range(5000):  # far more than a pipe buffer holds
        record = {name: None for name in FIELDS} | {
            "time": time.time(), "decision_id": f"d-{i}", "decision": "allow", "path": f"/p/{i}"}
        pipe.xadd(f"{prefix}audit", {"record": json.dumps(record)})
    pipe.execute()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": redis_server.url, "prefix": prefix},
                                      "audit": {"redis_stream": True}}))
    done = subprocess.run(
        ["/bin/bash", "-c", f'{INSTALLED[0]} audit export --since 1h --config "$1" | head -3; '
                            'echo "status ${PIPESTATUS[0]}" >&2', "sh", str(config)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.splitlines()[0].startswith("time,decision_id,")
    assert len(done.stdout.splitlines()) == 3
    assert done.stderr.strip() == "status 141"  # no BrokenPipeError traceback


def test_policy_validate_reads_a_directory_as_the_service_does(tmp_path: Path) -> None:
    """A dot-file (an editor's `.admin.yaml.swp`-style leftover, kubelet's `..` entries) is not
    a policy to the service, so validating the directory does not read it either."""
    (tmp_path / "admin.yaml").write_text("id: admin\nmatch: {paths: [{prefix: /admin/}]}\n")
    (tmp_path / ".draft.yaml").write_text("id: admin\nacton: deny\n")  # broken, and hidden
    result = run_cli(None, "policy", "validate", "-f", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "1 valid" in result.stdout + result.stderr
