"""Removing a passkey ends its user's step-up cookies at once, in every worker: a cookie
names its passkey, but it is the removal (a ``stepup`` revocation as of now, on the
all-worker revocation path) that Check sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import settings_from_document
from extauthz.errors import ConfigError
from extauthz.identity.model import Identity
from extauthz.revocation.model import Revocation, RevocationSet
from extauthz.stepup.cookie import StepupCookies, load_signing_key, new_signing_key_pem
from extauthz.stepup.removal import STEPUP_REVOCATION_TTL
from extauthz.stepup.store import Passkey, RedisStepupStore, user_key
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.redis import RedisServer
from tests.support.requests import STEPUP_COOKIE, bearer, identity
from tests.support.stack import ORIGIN, ExtAuthz, post_json
from tests.support.workers import Worker, all_answer, one_per_worker

_T = TypeVar("_T")
POLICY = {"id": "pay", "match": {"paths": [{"prefix": "/pay/"}]},
          "require": {"stepup": {"max_age": 3600}}}


def person(issuer: str, subject: str) -> Identity:
    return identity(subject, issuer=issuer)


def pay_answers(workers: list[Worker], token: str, cookie: str, want: int, within: float) -> float:
    """Every worker answers ``want`` on /pay/ for this token and step-up cookie; how soon."""
    return all_answer(workers, want, within, token, cookie=f"{STEPUP_COOKIE}={cookie}", path="/pay/x")


def in_store(url: str, prefix: str, fn: Callable[[RedisStepupStore], Awaitable[_T]]) -> _T:
    """Run one step against the step-up store on its own event loop and connection."""
    async def run() -> _T:
        store = RedisStepupStore(url, prefix, 2.0)
        try:
            return await fn(store)
        finally:
            await store.close()
    return asyncio.run(run())


def remove_on_the_page(service: ExtAuthz, token: str, cookie: str, cid: str) -> Any:
    r = post_json(f"http://127.0.0.1:{service.http_port}/.extauthz/webauthn/passkeys/remove",
                  {"id": cid}, bearer(token, origin=ORIGIN, cookie=f"{STEPUP_COOKIE}={cookie}"))
    assert r.status == 200, r.body
    return r.json()


def test_removing_passkeys_ends_step_up_cookies_in_every_worker_within_a_second(
    tmp_path: Path, issuer: LocalIssuer, redis: RedisServer,
) -> None:
    prefix = "rm:"
    cfg: dict[str, Any] = {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                           "store": {"url": redis.url, "prefix": prefix},
                           "default_action": "authenticated"}
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump(cfg))
    applied = run_cli(config, "policy", "apply", "-f", "-", stdin=yaml.safe_dump(POLICY))
    assert applied.returncode == 0, applied.stderr
    service = ExtAuthz(tmp_path, cfg, args=["--workers", "2"]).start()
    workers: list[Worker] = []
    try:
        workers = one_per_worker(service.grpc_port, token=issuer.mint("ES256", sub="probe"))
        pem = in_store(redis.url, prefix, lambda st: st.signing_key(new_signing_key_pem))  # theirs
        cookies = StepupCookies(load_signing_key(pem, "redis"), 43200, SYSTEM_CLOCK)

        # The CLI: `webauthn remove --all` ends alice's cookie in both workers.
        alice, alice_token = person(issuer.issuer, "alice"), issuer.mint("ES256", sub="alice")
        in_store(redis.url, prefix, lambda st: st.save_passkey(user_key(issuer.issuer, "alice"), Passkey(
            "c1", "pk", 0, "laptop", 1, None, (), issuer.issuer, "alice")))
        alice_cookie = cookies.mint(alice, "c1")
        pay_answers(workers, alice_token, alice_cookie, 200, within=1.0)
        assert workers[0].status(alice_token, path="/pay/x") == 401  # the cookie is what lets her in
        removed = run_cli(config, "webauthn", "remove", "--subject", "alice", "--all")
        assert removed.returncode == 0, removed.stderr
        assert "step-ups made before now end in every worker within a second" in removed.stdout
        assert pay_answers(workers, alice_token, alice_cookie, 401, within=1.0) < 1.0
        assert all(w.status(alice_token, path="/other") == 200 for w in workers)  # token ok

        # The account page: removing one of bob's two passkeys ends his current cookie too.
        bob, bob_token = person(issuer.issuer, "bob"), issuer.mint("ES256", sub="bob")
        for cid in ("c2", "c3"):
            pk = Passkey(cid, "pk", 0, cid, 1, None, (), issuer.issuer, "bob")
            in_store(redis.url, prefix, lambda st, pk=pk: st.save_passkey(  # type: ignore[misc]
                user_key(issuer.issuer, "bob"), pk))
        bob_cookie = cookies.mint(bob, "c3")
        pay_answers(workers, bob_token, bob_cookie, 200, within=1.0)
        assert remove_on_the_page(service, bob_token, bob_cookie, "c2") == {"removed": "c2"}
        assert pay_answers(workers, bob_token, bob_cookie, 401, within=1.0) < 1.0
        left = in_store(redis.url, prefix, lambda st: st.passkeys(user_key(issuer.issuer, "bob")))
        assert [p.credential_id for p in left] == ["c3"]

        time.sleep(1.05)  # a confirmation after the removal (with c3, which he still has) counts
        pay_answers(workers, bob_token, cookies.mint(bob, "c3"), 200, within=1.0)

        # What was recorded: a step-up revocation per user, outliving any cookie it ends.
        records = [Revocation.from_json(v) for v in
                   redis.client().hgetall(f"{prefix}revocations").values()]
        ended = sorted((r.value, r.issuer, r.kind) for r in records)
        assert ended == [("alice", issuer.issuer, "stepup"), ("bob", issuer.issuer, "stepup")]
        for r in records:
            assert r.expires is not None
            assert r.expires - r.at == STEPUP_REVOCATION_TTL
        listed = run_cli(config, "revoke", "list")
        assert listed.returncode == 0, listed.stderr
        assert "passkey removed on the account page" in listed.stdout
    finally:
        for w in workers:
            w.channel.close()
        service.stop()


def test_the_step_up_revocation_outlives_the_longest_cookie_any_config_allows() -> None:
    longest = settings_from_document({"stepup": {"max_age_limit": 30 * 86400}}).stepup
    assert longest.max_age_limit + 60 <= STEPUP_REVOCATION_TTL
    with pytest.raises(ConfigError, match="max_age_limit"):
        settings_from_document({"stepup": {"max_age_limit": 30 * 86400 + 1}})


def test_a_step_up_revocation_ends_older_cookies_of_that_user_only() -> None:
    rs = RevocationSet([Revocation("stepup", "alice", "https://idp", 1000, 9e9)])  # type: ignore[arg-type]
    assert rs.stepup_revoked("https://idp", "alice", 999)
    assert rs.stepup_revoked("https://idp", "alice", 1000)  # the same second: ended
    assert not rs.stepup_revoked("https://idp", "alice", 1001)
    assert not rs.stepup_revoked("https://other", "alice", 999)
    assert not rs.stepup_revoked("https://idp", "bob", 999)
    assert not rs.token_revoked(person("https://idp", "alice"))  # tokens are untouched
