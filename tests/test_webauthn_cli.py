"""`extauthz webauthn list|remove` against the store the service uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from extauthz.stepup.store import FileStepupStore, Passkey, user_key
from tests.support.cli import run_cli
from tests.support.clock import FakeClock


async def test_list_and_remove_a_users_passkeys(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"state_file": str(state)}}))
    store = FileStepupStore(str(state), FakeClock())
    user = user_key("https://idp", "alice")
    for cid, name in (("cred-1", "laptop"), ("cred-2", "yubikey")):
        await store.save_passkey(user, Passkey(cid, "pk", 0, name, 1_700_000_000 + len(cid), None, (),
                                               "https://idp", "alice"))

    listed = run_cli(config, "webauthn", "list", "--subject", "alice")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ISSUER", "ID", "NAME", "CREATED", "LAST", "USED"]
    assert [ln.split()[1:3] for ln in lines[1:]] == [["cred-1", "laptop"], ["cred-2", "yubikey"]]

    assert "removed passkey cred-1" in run_cli(config, "webauthn", "remove", "--subject", "alice",
                                          "--credential", "cred-1").stdout
    assert [p.name for p in await store.passkeys(user)] == ["yubikey"]
    gone = run_cli(config, "webauthn", "remove", "--subject", "alice", "--credential", "cred-1")
    assert gone.returncode == 2
    assert "alice has no passkey 'cred-1'" in gone.stderr
    assert "removed 1 passkey(s) of alice" in run_cli(config, "webauthn", "remove", "--subject", "alice",
                                                  "--all").stdout
    assert await store.passkeys(user) == []


def test_an_unknown_subject_and_a_missing_choice_are_clear_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"state_file": str(tmp_path / "s.json")}}))
    nobody = run_cli(config, "webauthn", "remove", "--subject", "nobody", "--all")
    assert nobody.returncode == 2
    assert "no passkeys for subject 'nobody'" in nobody.stderr
    usage = run_cli(config, "webauthn", "remove", "--subject", "x")
    assert usage.returncode == 2
    assert "one of the arguments --credential --all is required" in usage.stderr


async def test_list_shows_a_hostile_passkey_name_escaped_on_one_row(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"state_file": str(state)}}))
    store = FileStepupStore(str(state), FakeClock())
    hostile = "\x1b[2J\x1b[H\r\nhttps://idp  cred-9  FORGED row"  # stored before names were checked
    await store.save_passkey(user_key("https://idp", "alice"), Passkey(
        "cred-1", "pk", 0, hostile, 1_700_000_000, None, (), "https://idp", "alice"))
    listed = run_cli(config, "webauthn", "list", "--subject", "alice")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout
    assert "\r" not in listed.stdout
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert "\\x1b[2J\\x1b[H\\r\\nhttps://idp  cred-9  FORGED row" in lines[1]
