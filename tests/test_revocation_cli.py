"""`extauthz revoke` refuses revocations that could never apply, and its keys name one thing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.cli import main
from extauthz.identity.model import Identity
from extauthz.revocation.model import Revocation, RevocationSet, parse_key, revocation_key
from tests.support.redis import RedisServer
from tests.support.requests import identity

IDP = "https://idp.example.com"
IDP_8443 = "https://idp.example.com:8443"  # the same host on another port: a second issuer


def ident(iss: str, iat: float) -> Identity:
    return identity("alice", issuer=iss, issued_at=iat)


@pytest.fixture(params=["file", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A CLI config naming two issuers, on the embedded state file or a real Redis."""
    if request.param == "file":
        store: dict[str, Any] = {"state_file": str(tmp_path / "state.json")}
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        store = {"url": redis.url, "prefix": f"revcli-{uuid.uuid4().hex[:8]}:"}
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({
        "issuers": [{"issuer": IDP, "audiences": ["a"], "username_prefix": "oidc:"},
                    {"issuer": IDP_8443, "audiences": ["a"]}],
        "store": store}))
    return path


def revoke(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main(["revoke", *args, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    code, out, _ = revoke(capsys, config, "list")
    assert code == 0
    return [line.split()[0] for line in out.splitlines()[1:]]


@pytest.mark.parametrize(("args", "message"), [
    (["subject", "--subject", "alice", "--issuer", IDP + "/"],
     f"is not a configured issuer, so it would match no token; did you mean '{IDP}'?"),
    (["all", "--issuer", IDP + "/"], f"did you mean '{IDP}'?"),
    (["subject", "--subject", "alice", "--issuer", "https://other.example.com"],
     f"configured: '{IDP}', '{IDP_8443}'"),
    (["client", "--client-id", "ci", "--issuer", "https://other.example.com"],
     "is not a configured issuer"),
    (["token", "--jti", "j1", "--issuer", "https://IDP.example.com"], "is not a configured issuer"),
    (["subject", "--subject", "alice", "--issuer", ""], "--issuer is empty"),
    (["all", "--issuer", ""], "--issuer is empty"),
    (["subject", "--subject", ""], "--subject is empty"),
    (["client", "--client-id", ""], "--client-id is empty"),
    (["token", "--jti", ""], "--jti is empty"),
    (["subject", "--subject", "alice", "--ttl", "-60"], "--ttl -60 is not positive"),
    (["subject", "--subject", "alice", "--ttl", "0"], "--ttl 0 is not positive"),
    (["all", "--issuer", IDP, "--ttl", "-1"], "--ttl -1 is not positive"),
    (["token", "--jti", "j1", "--ttl", "-60"], "--ttl -60 is not positive"),
    (["token", "--jti", "j1", "--expires-at", "1000"], "--expires-at 1000 is not in the future"),
    (["subject", "--subject", "alice", "--ttl", str(10**12)], "more than ten years"),
])
def test_a_revocation_that_could_never_apply_is_refused_and_nothing_is_stored(
    capsys: pytest.CaptureFixture[str], config: Path, args: list[str], message: str
) -> None:
    code, out, err = revoke(capsys, config, *args)
    assert code == 2, out
    assert message in err
    assert "Traceback" not in err
    assert out == ""
    assert listed(capsys, config) == []


def test_an_issuer_is_refused_when_the_config_names_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "bare.yaml"
    cfg.write_text(yaml.safe_dump({"store": {"state_file": str(tmp_path / "s.json")}}))
    code, _, err = revoke(capsys, cfg, "all", "--issuer", IDP)
    assert code == 2
    assert "this config lists none" in err


def test_a_configured_issuer_exactly_as_written_is_accepted(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = revoke(capsys, config, "all", "--issuer", IDP_8443)
    assert (code, err) == (0, "")
    assert f"every token of issuer '{IDP_8443}', issued up to" in out
    assert listed(capsys, config) == [revocation_key("all", IDP_8443, "")]


def test_subject_says_in_help_and_output_that_it_is_the_tokens_sub(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    with pytest.raises(SystemExit):
        main(["revoke", "subject", "--help"])
    assert "the token's `sub` claim" in capsys.readouterr().out
    code, out, err = revoke(capsys, config, "subject", "--subject", "8d1f-opaque")
    assert code == 0
    assert "every token of any issuer whose `sub` is '8d1f-opaque'" in out
    assert err == ""


@pytest.mark.parametrize("subject", ["alice@example.com", "oidc:alice"])
def test_a_subject_that_looks_like_a_username_or_email_gets_a_note(
    capsys: pytest.CaptureFixture[str], config: Path, subject: str
) -> None:
    code, _, err = revoke(capsys, config, "subject", "--subject", subject)
    assert code == 0
    assert "looks like a username or an email" in err
    assert "matches the token's `sub` claim only" in err


def test_an_issuer_with_a_colon_and_a_subject_with_a_colon_are_two_revocations(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    # Under the old `kind:issuer:value` keys both were `subject:https://idp.example.com:8443:deploy`,
    # so the second revocation silently replaced the first.
    assert revoke(capsys, config, "subject", "--subject", "8443:deploy", "--issuer", IDP)[0] == 0
    assert revoke(capsys, config, "subject", "--subject", "deploy", "--issuer", IDP_8443)[0] == 0
    keys = listed(capsys, config)
    assert sorted(keys) == sorted([revocation_key("subject", IDP, "8443:deploy"),
                                   revocation_key("subject", IDP_8443, "deploy")])
    assert len(set(keys)) == 2
    code, out, _ = revoke(capsys, config, "undo", revocation_key("subject", IDP_8443, "deploy"))
    assert code == 0
    assert f"lifted {revocation_key('subject', IDP_8443, 'deploy')}" in out
    assert listed(capsys, config) == [revocation_key("subject", IDP, "8443:deploy")]


def test_keys_encode_each_part_and_parse_back() -> None:
    assert revocation_key("subject", "X:svc", "deploy") == "subject:X%3Asvc:deploy"
    assert revocation_key("subject", "X", "svc:deploy") == "subject:X:svc%3Adeploy"
    assert revocation_key("subject", "", "a%b c\x1b") == "subject:*:a%25b%20c%1B"
    assert revocation_key("token", "*", "j") == "token:%2A:j"  # a literal '*' is not "any"
    for target in [("subject", "X:svc", "deploy"), ("all", IDP_8443, ""), ("client", "", "ü:%")]:
        assert parse_key(revocation_key(*target)) == target
    assert parse_key("subject:https%3a//x:a") == ("subject", "https://x", "a")  # either case
    for bad in ["subject:*:100%", "subject:*:%61", "subject:*:%ff", "nope:*:a", "subject:a"]:
        assert parse_key(bad) is None


def _legacy_store(config: Path, record: Revocation) -> None:
    """Write a record under its old-form key, as a release before the encoding did."""
    store = yaml.safe_load(config.read_text())["store"]
    if "url" in store:
        import redis

        key = store["prefix"] + "revocations"
        client = redis.Redis.from_url(store["url"])
        client.hset(key, record.legacy_key, record.to_json())
        client.set(key + ":revision", 1)  # as that release's write left it
        client.set(key + ":revision:epoch", f"{int(time.time())}.0")
    else:
        Path(store["state_file"]).write_text(
            json.dumps({"revocations": {record.legacy_key: record.to_json()}}))


@pytest.mark.parametrize("form", ["new", "old"])
def test_a_record_stored_under_an_old_key_is_listed_enforced_and_lifted_by_either_key(
    capsys: pytest.CaptureFixture[str], config: Path, form: str
) -> None:
    old = Revocation("all", "", IDP, int(time.time()), None, "before the upgrade")
    _legacy_store(config, old)
    assert old.legacy_key == f"all:{IDP}:" != old.key
    assert listed(capsys, config) == [old.key]  # shown in the new form
    assert RevocationSet([old]).token_revoked(ident(iss=IDP, iat=old.at))
    code, out, err = revoke(capsys, config, "undo", old.key if form == "new" else old.legacy_key)
    assert code == 0, err
    assert f"lifted {old.key}" in out
    assert listed(capsys, config) == []


def test_an_old_key_that_now_names_something_else_is_not_overwritten(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    old = Revocation("subject", "a%3Ab", "", int(time.time()), None)  # old key: subject:*:a%3Ab
    _legacy_store(config, old)
    code, _, err = revoke(capsys, config, "subject", "--subject", "a:b")  # new key: the same
    assert code == 2
    assert "is stored under 'subject:*:a%3Ab'" in err
    assert listed(capsys, config) == [old.key]


def _token(claims: str) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    return f"{header}.{b64(claims.encode())}.c2ln"


@pytest.mark.parametrize(("exp", "message"), [
    ("NaN", "exp is nan, not a number of seconds"),
    ("Infinity", "exp is inf, not a number of seconds"),
    ("1e400", "exp is inf, not a number of seconds"),
    ('"2000000000"', "exp is '2000000000', not a number of seconds"),
    ("true", "exp is True, not a number of seconds"),
    ("[1]", "exp is [1], not a number of seconds"),
    ("1e30", "is past the year 9999"),
    ("99999999999999999999999", "is past the year 9999"),
    ("1000", "that token expired at 1970-01-01 00:16:40Z"),
    ("-5", "that token expired at -5"),
    (None, "that token has no exp"),
])
def test_a_token_with_an_odd_exp_is_a_clean_error(
    capsys: pytest.CaptureFixture[str], config: Path, exp: str | None, message: str
) -> None:
    claims = f'{{"iss":"{IDP}","sub":"alice","jti":"j1"' + (f',"exp":{exp}}}' if exp else "}")
    code, _, err = revoke(capsys, config, "token", "--token", _token(claims))
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert listed(capsys, config) == []


def test_a_token_of_an_issuer_not_configured_is_refused(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    claims = f'{{"iss":"{IDP}/","jti":"j1","exp":{int(time.time()) + 600}}}'
    code, _, err = revoke(capsys, config, "token", "--token", _token(claims))
    assert code == 2
    assert f"the token's iss '{IDP}/' is not a configured issuer" in err


def test_a_revoked_token_stays_revoked_until_the_service_would_refuse_it_anyway(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    exp = int(time.time()) + 600
    code, out, _ = revoke(capsys, config, "token", "--token",
                          _token(f'{{"iss":"{IDP}","jti":"j1","exp":{exp}}}'))
    assert code == 0
    assert f"the token with jti 'j1' of issuer '{IDP}'" in out
    # The verifier accepts a token up to `token.leeway` (30 s) past its exp: so does the record.
    expires = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(exp + 30))
    assert f"expires: {expires}" in out
