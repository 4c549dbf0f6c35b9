"""Revocation: the rules, and every kind effective in every worker within a second."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from extauthz.identity.model import Identity
from extauthz.revocation.model import Revocation, RevocationSet
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.redis import RedisServer
from tests.support.stack import ExtAuthz, Gateway
from tests.test_policy_propagation import Worker, one_per_worker


def ident(sub: str = "alice", iat: float | None = 1000, jti: str | None = "j1",
          client: str | None = "cli", iss: str = "https://idp") -> Identity:
    return Identity(issuer=iss, subject=sub, username=sub, email=None, audiences=(), groups=(),
                    scopes=(), client_id=client, acr=None, auth_time=None, jti=jti, issued_at=iat,
                    expires_at=9e9, claims=MappingProxyType({}))


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


def status(worker: Worker, token: str) -> int:
    from envoy_data_plane.envoy.service.auth.v3 import CheckResponse

    from tests.test_check_service import _request

    resp = CheckResponse.parse(worker.check(_request({"authorization": f"Bearer {token}"}), timeout=5))
    return 200 if resp.status.code == 0 else int(resp.denied_response.status.code)


def until(workers: list[Worker], token: str, want: int, within: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if all(status(w, token) == want for w in workers):
            return
        time.sleep(0.01)
    raise AssertionError(f"not {want} in every worker within {within}s: "
                         f"{[status(w, token) for w in workers]}")


def test_every_kind_is_enforced_by_every_worker_within_a_second_and_survives_a_restart(
    tmp_path: Path
) -> None:
    idp = LocalIssuer()
    redis = RedisServer(tmp_path / "redis").start()
    cfg: dict[str, Any] = {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                           "store": {"url": redis.url, "prefix": "rev:"},
                           "default_action": "authenticated"}
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"issuers": cfg["issuers"],  # `revoke` checks --issuer
                                      "store": {"url": redis.url, "prefix": "rev:"}}))
    service = ExtAuthz(tmp_path, cfg, args=["--workers", "2"]).start()
    gateway = Gateway(tmp_path, service).start()
    workers: list[Worker] = []
    try:
        workers = one_per_worker(service.grpc_port, token=idp.mint("ES256", sub="probe"))
        by_jti = idp.mint("ES256", sub="tom", jti="jti-1", azp="web")
        by_sub = idp.mint("ES256", sub="sam", azp="web")
        by_client = idp.mint("ES256", sub="cal", azp="ci-bot")
        by_issuer = idp.mint("ES256", sub="ivy", azp="web")
        for token in (by_jti, by_sub, by_client, by_issuer):
            until(workers, token, 200, within=1.0)

        assert run_cli(config, "revoke", "token", "--token", by_jti).returncode == 0
        until(workers, by_jti, 401, within=1.0)
        r = gateway.get("/", {"authorization": f"Bearer {by_jti}"})
        assert r.status == 401
        assert 'error="invalid_token", error_description="token revoked"' in r.headers["www-authenticate"]
        assert status(workers[0], by_sub) == 200  # only that token

        assert run_cli(config, "revoke", "subject", "--subject", "sam",
                       "--reason", "offboarded").returncode == 0
        until(workers, by_sub, 401, within=1.0)
        assert run_cli(config, "revoke", "client", "--client-id", "ci-bot").returncode == 0
        until(workers, by_client, 401, within=1.0)
        assert run_cli(config, "revoke", "all", "--issuer", idp.issuer).returncode == 0
        until(workers, by_issuer, 401, within=1.0)

        time.sleep(1.1)  # a token issued after the revocations is fine again
        until(workers, idp.mint("ES256", sub="sam", azp="ci-bot"), 200, within=1.0)

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
        assert run_cli(config, "revoke", "undo", f"all:{idp.issuer}:").returncode == 0
        deadline = time.monotonic() + 2
        while gateway.get("/", {"authorization": f"Bearer {by_sub}"}).status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        missing = run_cli(config, "revoke", "undo", "subject:*:sam")
        assert missing.returncode == 2
        assert "no revocation 'subject:*:sam'" in missing.stderr
    finally:
        for w in workers:
            w.channel.close()
        gateway.stop()
        service.stop()
        redis.stop()
        idp.close()


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


def test_the_embedded_store_revokes_in_a_running_service(tmp_path: Path) -> None:
    idp = LocalIssuer()
    state = tmp_path / "state.json"
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                                  "store": {"state_file": str(state), "poll_interval": 0.1},
                                  "default_action": "authenticated"}).start()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"state_file": str(state)}}))
    try:
        worker = Worker(service.grpc_port)
        token = idp.mint("ES256", sub="una")
        assert status(worker, token) == 200
        assert run_cli(config, "revoke", "subject", "--subject", "una").returncode == 0
        until([worker], token, 401, within=1.0)
        worker.channel.close()
    finally:
        service.stop()
        idp.close()


async def test_a_step_up_cookie_from_before_a_subject_revocation_stops_working(
    issuer: LocalIssuer,
) -> None:
    from extauthz.authorize import Authorizer
    from extauthz.clock import FakeClock
    from extauthz.identity.jwks import HttpFetcher, IssuerKeys
    from extauthz.identity.verify import TokenVerifier
    from extauthz.policy.model import parse_policies
    from extauthz.policy.store import PolicySet
    from extauthz.policy.sync import PolicySnapshot
    from extauthz.request import RequestView
    from extauthz.revocation.model import RevocationList
    from extauthz.revocation.sync import RevocationSnapshot
    from extauthz.stepup.cookie import load_signing_key, new_signing_key_pem
    from extauthz.stepup.gate import StepupGate
    from tests.conftest import make_settings

    clock = FakeClock(now_wall=time.time())
    settings = make_settings(issuer)
    fetcher = HttpFetcher(2.0)
    keys = {issuer.issuer: IssuerKeys(settings.issuers[0], settings.jwks, fetcher, clock)}
    await keys[issuer.issuer].refresh()
    revocations = RevocationSnapshot(clock)
    revocations.install(RevocationList("0", ()))
    verifier = TokenVerifier(settings, keys, clock, revocations)
    policies = PolicySnapshot(clock)
    policies.install(PolicySet("1", tuple(parse_policies([{"id": "pay", "require": {"stepup": {}}}]))))
    stepup = StepupGate(cookie_name=settings.stepup.cookie_name, lifetime=3600, clock=clock,
                        revocations=revocations)
    stepup.use_key(load_signing_key(new_signing_key_pem(), "k"))
    assert stepup.cookies is not None
    authorizer = Authorizer(settings=settings, verifier=verifier, policies=policies,
                            stepups=stepup, clock=clock, revocations=revocations)

    old_token = issuer.mint("ES256", iat=int(clock.wall()) - 60)
    cookie = stepup.cookies.mint(await verifier.verify(old_token), "cred")

    def view(token: str) -> RequestView:
        return RequestView(method="GET", scheme="https", host="h", path="/x", query="",
                           headers={"authorization": f"Bearer {token}",
                                    "cookie": f"__Host-extauthz-stepup={cookie}"},
                           context_extensions={}, source_address="", request_id="")

    assert (await authorizer.check(view(old_token))).allowed
    clock.advance(10)
    revocations.install(RevocationList("1", (Revocation("subject", "alice", "", int(clock.wall()), None),)))
    clock.advance(5)
    fresh = issuer.mint("ES256", iat=int(clock.wall()))
    assert (await authorizer.check(view(old_token))).reason == "token_revoked"
    decision = await authorizer.check(view(fresh))  # a new sign-in, but the old step-up
    assert (decision.allowed, decision.reason) == (False, "stepup_required")
    await fetcher.close()
