"""Revocation: the rules, and every kind effective in every worker within a second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.identity.model import Identity
from extauthz.revocation.model import Revocation, RevocationSet
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.redis import RedisServer
from tests.support.requests import STEPUP_COOKIE, bearer, identity, request_view
from tests.support.stack import ExtAuthz, Gateway
from tests.support.verifying import policy_snapshot, verifying
from tests.support.workers import Worker, all_answer, one_per_worker


def ident(iat: float | None = 1000, client: str | None = "cli", iss: str = "https://idp") -> Identity:
    return identity("alice", issuer=iss, client_id=client, jti="j1", issued_at=iat)


@pytest.mark.parametrize(("record", "identity", "revoked"), [
    (Revocation("token", "j1", "", 0, None), ident(), True),
    (Revocation("token", "j1", "https://idp", 0, None), ident(), True),
    (Revocation("token", "j1", "https://other", 0, None), ident(), False),
    (Revocation("token", "j2", "", 0, None), ident(), False),
    (Revocation("subject", "alice", "", 1000, None), ident(iat=1000), True),  # same second: cut
    (Revocation("subject", "alice", "", 1000, None), ident(iat=1001), False),  # newer: fine
    (Revocation("subject", "alice", "", 1000, None), ident(iat=None), True),  # no iat: fail closed
    (Revocation("subject", "alice", "https://idp", 1000, None), ident(iss="https://other"), False),
    (Revocation("subject", "bob", "", 1000, None), ident(), False),
    (Revocation("client", "cli", "", 1000, None), ident(), True),
    (Revocation("client", "cli", "", 1000, None), ident(client=None), False),
    (Revocation("all", "", "https://idp", 1000, None), ident(), True),
    (Revocation("all", "", "https://idp", 999, None), ident(), False),
])
def test_which_tokens_a_revocation_cuts_off(record: Revocation, identity: Identity, revoked: bool) -> None:
    assert RevocationSet([record]).token_revoked(identity) is revoked


def test_step_up_proofs_of_a_revoked_subject_stop_working() -> None:
    rs = RevocationSet([Revocation("subject", "alice", "", 1000, None)])
    assert rs.stepup_revoked("https://idp", "alice", 999)
    assert not rs.stepup_revoked("https://idp", "alice", 1001)
    assert not rs.stepup_revoked("https://idp", "bob", 999)


def test_every_kind_is_enforced_by_every_worker_within_a_second_and_survives_a_restart(
    tmp_path: Path, issuer: LocalIssuer, redis: RedisServer
) -> None:
    cfg: dict[str, Any] = {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                           "store": {"url": redis.url, "prefix": "rev:"},
                           "default_action": "authenticated"}
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"issuers": cfg["issuers"],  # `revoke` checks --issuer
                                      "store": {"url": redis.url, "prefix": "rev:"}}))
    service = ExtAuthz(tmp_path, cfg, args=["--workers", "2"]).start()
    gateway = Gateway(tmp_path, service).start()
    workers: list[Worker] = []
    try:
        workers = one_per_worker(service.grpc_port, token=issuer.mint("ES256", sub="probe"))
        by_jti = issuer.mint("ES256", sub="tom", jti="jti-1", azp="web")
        by_sub = issuer.mint("ES256", sub="sam", azp="web")
        by_client = issuer.mint("ES256", sub="cal", azp="ci-bot")
        by_issuer = issuer.mint("ES256", sub="ivy", azp="web")
        for token in (by_jti, by_sub, by_client, by_issuer):
            all_answer(workers, 200, 1.0, token)

        assert run_cli(config, "revoke", "token", "--token", by_jti).returncode == 0
        all_answer(workers, 401, 1.0, by_jti)
        r = gateway.get("/", {"authorization": f"Bearer {by_jti}"})
        assert r.status == 401
        assert 'error="invalid_token", error_description="token revoked"' in r.headers["www-authenticate"]
        assert workers[0].status(by_sub) == 200  # only that token

        assert run_cli(config, "revoke", "subject", "--subject", "sam",
                       "--reason", "offboarded").returncode == 0
        all_answer(workers, 401, 1.0, by_sub)
        assert run_cli(config, "revoke", "client", "--client-id", "ci-bot").returncode == 0
        all_answer(workers, 401, 1.0, by_client)
        assert run_cli(config, "revoke", "all", "--issuer", issuer.issuer).returncode == 0
        all_answer(workers, 401, 1.0, by_issuer)

        time.sleep(1.1)  # a token issued after the revocations is fine again
        all_answer(workers, 200, 1.0, issuer.mint("ES256", sub="sam", azp="ci-bot"))

        listed = run_cli(config, "revoke", "list").stdout
        assert "subject:*:sam" in listed
        assert "offboarded" in listed
        assert "client:*:ci-bot" in listed

        for w in workers:
            w.channel.close()
        workers = []
        service.stop()
        service.start()  # a restart keeps every revocation
        assert gateway.get("/", {"authorization": f"Bearer {by_sub}"}).status == 401
        assert gateway.get("/", {"authorization": f"Bearer {by_jti}"}).status == 401

        assert run_cli(config, "revoke", "undo", "subject:*:sam").returncode == 0
        assert run_cli(config, "revoke", "undo", f"all:{issuer.issuer}:").returncode == 0
        until(lambda: gateway.get("/", bearer(by_sub)).status == 200, 2, 0.02)
        missing = run_cli(config, "revoke", "undo", "subject:*:sam")
        assert missing.returncode == 2
        assert "no revocation 'subject:*:sam'" in missing.stderr
    finally:
        for w in workers:
            w.channel.close()
        gateway.stop()
        service.stop()


def test_a_token_revocation_expires_when_the_token_would(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"state_file": str(tmp_path / "s.json")},
                                      "token": {"leeway": 0}}))  # kept until exp + leeway
    assert run_cli(config, "revoke", "token", "--jti", "short",
                   "--expires-at", str(int(time.time()) + 2)).returncode == 0
    assert run_cli(config, "revoke", "subject", "--subject", "x", "--ttl", "2").returncode == 0
    assert "token:*:short" in run_cli(config, "revoke", "list").stdout
    time.sleep(2.2)
    listed = run_cli(config, "revoke", "list").stdout
    assert "token:*:short" not in listed
    assert "subject:*:x" not in listed


def test_the_embedded_store_revokes_in_a_running_service(tmp_path: Path, issuer: LocalIssuer) -> None:
    state = tmp_path / "state.json"
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                                  "store": {"state_file": str(state), "poll_interval": 0.1},
                                  "default_action": "authenticated"}).start()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"state_file": str(state)}}))
    try:
        worker = Worker(service.grpc_port)
        token = issuer.mint("ES256", sub="una")
        assert worker.status(token) == 200
        assert run_cli(config, "revoke", "subject", "--subject", "una").returncode == 0
        all_answer([worker], 401, 1.0, token)
        worker.channel.close()
    finally:
        service.stop()


async def test_a_step_up_cookie_from_before_a_subject_revocation_stops_working(
    issuer: LocalIssuer,
) -> None:
    from extauthz.authorize import Authorizer
    from extauthz.decision import Decision
    from extauthz.revocation.model import RevocationList
    from extauthz.revocation.sync import RevocationSnapshot
    from extauthz.stepup.cookie import load_signing_key, new_signing_key_pem
    from extauthz.stepup.gate import StepupGate
    from tests.support.clock import FakeClock

    clock = FakeClock(now_wall=time.time())
    revocations = RevocationSnapshot(clock)
    revocations.install(RevocationList("0", ()))
    async with verifying(issuer, clock=clock, revocations=revocations) as v:
        stepup = StepupGate(cookie_name=v.settings.stepup.cookie_name, lifetime=3600, clock=clock,
                            revocations=revocations)
        stepup.use_key(load_signing_key(new_signing_key_pem(), "k"))
        assert stepup.cookies is not None
        authorizer = Authorizer(settings=v.settings, verifier=v.verifier,
                                policies=policy_snapshot([{"id": "pay", "require": {"stepup": {}}}], clock),
                                stepups=stepup, clock=clock, revocations=revocations)

        old_token = issuer.mint("ES256", iat=int(clock.wall()) - 60)
        proof = stepup.cookies.mint(await v.verifier.verify(old_token), "cred")

        async def check(token: str) -> Decision:
            return await authorizer.check(request_view("/x", token,
                                                       headers={"cookie": f"{STEPUP_COOKIE}={proof}"}))

        assert (await check(old_token)).allowed
        clock.advance(10)
        cut = Revocation("subject", "alice", "", int(clock.wall()), None)
        revocations.install(RevocationList("1", (cut,)))
        clock.advance(5)
        fresh = issuer.mint("ES256", iat=int(clock.wall()))
        assert (await check(old_token)).reason == "token_revoked"
        decision = await check(fresh)  # a new sign-in, but the old step-up
        assert (decision.allowed, decision.reason) == (False, "stepup_required")

