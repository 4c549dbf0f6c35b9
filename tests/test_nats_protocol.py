"""The callout's protocol edges against a real nats-server: sealed (xkey) requests, the
callout down, two workers in one queue group, forged or malformed requests; and the NATS JWT
and config pieces on their own."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from extauthz.config import settings_from_document
from extauthz.engine import build_engine
from extauthz.errors import ConfigError
from extauthz.nats import jwt as natsjwt
from extauthz.nats.callout import SUBJECT, Callout
from extauthz.nats.nkey import Kind, SigningPair
from extauthz.nats.request import BadAuthRequest, parse_request
from tests.support.inproc import ServerThread
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.nats import NatsServer, example_issuer, nats_config
from tests.support.settings import serving_settings

POLICY = """
id: orders-writer
require: {authenticated: true, claims: {groups: [orders]}}
nats:
  publish: {allow: ["orders.>"]}
  subscribe: {allow: ["orders.>", "_INBOX.>"]}
"""


def worker_settings(idp: LocalIssuer, server: NatsServer, tmp: Path, *,
                    audit: dict[str, Any] | None = None, **nats_keys: Any) -> Any:
    policies = tmp / "policies.yaml"
    policies.write_text(POLICY)
    return serving_settings(idp, store={"url": f"file://{policies}", "poll_interval": 0.1},
                            audit=audit or {"stdout": False},
                            nats=nats_config(server, **nats_keys))


async def attempt(server: NatsServer, **options: Any) -> tuple[Client | None, str]:
    nc = Client()
    try:
        await nc.connect(server.url, allow_reconnect=False, connect_timeout=3,
                         max_reconnect_attempts=0, **options)
    except (NatsError, TimeoutError, OSError) as e:  # refused, or no answer in time
        with contextlib.suppress(Exception):
            await nc.close()
        if nc._transport is not None:  # nats-py leaves a refused socket to the gc
            nc._transport.close()
        return None, str(e)
    return nc, ""


async def test_sealed_xkey_requests_are_answered_sealed(idp: LocalIssuer, tmp_path: Path) -> None:
    server = NatsServer(xkey=True).start()
    worker = ServerThread(worker_settings(idp, server, tmp_path, xkey=True)).start()
    try:
        nc, error = await attempt(server, token=idp.mint(groups=["orders"]))
        assert nc is not None, error
        await nc.close()
        nc, error = await attempt(server, token=idp.mint(groups=["sales"]))
        assert nc is None
        assert "Authorization Violation" in error
    finally:
        if worker._thread.is_alive():
            worker.stop()
        server.stop()


async def test_an_unsealed_callout_refuses_a_sealed_request(idp: LocalIssuer, tmp_path: Path) -> None:
    server = NatsServer(xkey=True).start()
    worker = ServerThread(worker_settings(idp, server, tmp_path)).start()  # no xkey_seed_file
    try:
        nc, error = await attempt(server, token=idp.mint(groups=["orders"]))
        assert nc is None
        assert "Authorization Violation" in error
    finally:
        if worker._thread.is_alive():
            worker.stop()
        server.stop()


async def test_with_the_callout_down_clients_cannot_connect(idp: LocalIssuer, tmp_path: Path) -> None:
    server = NatsServer().start()
    worker = ServerThread(worker_settings(idp, server, tmp_path)).start()
    try:
        token = idp.mint(groups=["orders"])
        nc, error = await attempt(server, token=token)
        assert nc is not None, error
        await nc.close()
        worker.stop()
        nc, error = await attempt(server, token=token)  # the server waits its auth timeout
        assert nc is None
        assert "Authorization Violation" in error
    finally:
        if worker._thread.is_alive():
            worker.stop()
        server.stop()


async def test_two_workers_share_the_requests_in_one_queue_group(
        idp: LocalIssuer, tmp_path: Path) -> None:
    server = NatsServer().start()
    workers = [ServerThread(worker_settings(idp, server, tmp_path / str(i))).start()
               for i in range(2) if (tmp_path / str(i)).mkdir() is None]
    try:
        for _ in range(12):
            nc, error = await attempt(server, token=idp.mint(groups=["orders"]))
            assert nc is not None, error
            await nc.close()
        answered = [w.engine.metrics for w in workers if w.engine is not None]
        counts = [sum(n for n, _ in _nats_decisions(m)) for m in answered]
        assert sum(counts) == 12, counts  # each request answered once
        assert all(c > 0 for c in counts), counts  # by both workers
        workers[0].stop()  # one leaves: the other answers everything
        nc, error = await attempt(server, token=idp.mint(groups=["orders"]))
        assert nc is not None, error
        await nc.close()
    finally:
        for w in workers:
            if w._thread.is_alive():
                w.stop()
        server.stop()


def _nats_decisions(metrics: Any) -> list[tuple[float, Any]]:
    for observed in metrics._observed:
        if observed.name == "extauthz.nats.decisions":
            return list(observed.fn())
    return []


def _request_claims(server_key: SigningPair, issuer: str, **nats_over: Any) -> dict[str, Any]:
    user = SigningPair.generate(Kind.USER)
    return {"aud": "nats-authorization-request", "exp": int(time.time()) + 2, "sub": issuer,
            "nats": {"server_id": {"name": "x", "host": "127.0.0.1", "id": server_key.public},
                     "user_nkey": user.public, "client_info": {"host": "127.0.0.1", "id": 7},
                     "connect_opts": {"auth_token": "t", "protocol": 1},
                     "type": "authorization_request", "version": 2, **nats_over}}


async def test_a_forged_or_malformed_request_gets_no_answer_and_is_logged(
        idp: LocalIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Only the server itself may publish to $SYS.REQ.USER.AUTH (the auth user's publish is a
    # permissions violation), so crafted requests go to the callout's handler directly.
    engine = build_engine(worker_settings(idp, NatsServer(), tmp_path))
    await engine.load_once()
    callout = Callout(engine)
    issuer = example_issuer().public
    real_server = SigningPair.generate(Kind.SERVER)
    other = SigningPair.generate(Kind.SERVER)
    signed = natsjwt.encode(_request_claims(real_server, issuer), other, int(time.time()))
    head, body, sig = signed.split(".")
    forged = [
        ("another key signed it", signed),
        ("garbage", "not a jwt"),
        ("a bad signature", f"{head}.{body}.{sig[:-6]}AAAAAA"),
        ("wrong aud", natsjwt.encode({**_request_claims(other, issuer), "aud": "x"}, other, 0)),
        ("expired", natsjwt.encode({**_request_claims(other, issuer), "exp": 1000}, other, 0)),
        ("another issuer", natsjwt.encode(_request_claims(other, "AOTHER"), other, 0)),
    ]
    caplog.set_level(logging.WARNING, "extauthz.nats")
    try:
        for _, data in forged:
            await callout._on_request(Msg(_client=None, subject=SUBJECT, reply="",  # type: ignore[arg-type]
                                          data=data.encode()))
    finally:
        await engine.close()
    refusals = [r.getMessage() for r in caplog.records
                if "refused an authorization request" in r.getMessage()]
    assert len(refusals) == len(forged), refusals
    assert any("signer is not the server" in r for r in refusals)
    assert callout.metrics.decisions.readings() == [
        (len(forged), {"decision": "deny", "reason": "bad_check_request"})]


def test_a_request_is_parsed_strictly() -> None:
    issuer = example_issuer().public
    server = SigningPair.generate(Kind.SERVER)
    now = int(time.time())
    good = natsjwt.encode(_request_claims(server, issuer), server, now)
    assert parse_request(good, issuer=issuer, now=now).auth_token == "t"
    for token in (natsjwt.encode(_request_claims(server, "AOTHER"), server, now),
                  natsjwt.encode(_request_claims(server, issuer, type="user"), server, now),
                  natsjwt.encode(_request_claims(server, issuer, user_nkey="UBAD"), server, now),
                  natsjwt.encode(_request_claims(server, issuer, version=2.0), server, now),
                  natsjwt.encode(_request_claims(server, issuer, version=True), server, now),
                  natsjwt.encode(_request_claims(server, issuer, connect_opts=[]), server, now),
                  natsjwt.encode(_request_claims(server, issuer, client_info={"id": True}),
                                 server, now),
                  good.replace(".", "..", 1)):
        with pytest.raises(BadAuthRequest):
            parse_request(token, issuer=issuer, now=now)


def test_the_jti_is_nats_io_jwts_hash_of_the_standard_claims() -> None:
    # nats-io/jwt v2 claims.go hash(): json.Marshal(ClaimsData) (jti empty, so left out),
    # SHA-512/256, base32 without padding. Go escapes <, > and & in JSON.
    standard = {"aud": "APP", "exp": 2, "iat": 1, "iss": "AISSUER", "name": "a<b&c>",
                "sub": "UUSER"}
    expected_json = (b'{"aud":"APP","exp":2,"iat":1,"iss":"AISSUER",'
                     b'"name":"a\\u003cb\\u0026c\\u003e","sub":"UUSER"}')
    import hashlib
    digest = hashlib.new("sha512_256", expected_json).digest()
    assert natsjwt.jti(standard) == base64.b32encode(digest).decode().rstrip("=")
    token = natsjwt.encode({"sub": "UUSER", "aud": "APP", "nats": {"type": "user"}},
                           example_issuer(), 1)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = natsjwt.decode(token, Kind.ACCOUNT)
    assert list(claims) == ["aud", "jti", "iat", "iss", "sub", "nats"]


@pytest.mark.parametrize(("keys", "message"), [
    ({"issuer_seed_file": None}, "'nats.issuer_seed_file' is not set"),
    ({"issuer_seed_file": "/nonexistent/issuer.nk"}, "'nats.issuer_seed_file' names"),
    ({"issuer_seed_file": "XKEY"}, "'nats.issuer_seed_file'"),
    ({"account": None}, "'nats.account' is not set"),
    ({"token": "t"}, "more than one way"),
    ({"system_user": "sys"}, "system account's credentials"),
    ({"system_creds_file": "/nonexistent/sys.creds"}, "'nats.system_creds_file' names"),
])
def test_a_bad_nats_config_is_one_line_naming_the_key(keys: dict[str, Any], message: str,
                                                      tmp_path: Path) -> None:
    if keys.get("issuer_seed_file") == "XKEY":  # a curve seed where an account seed belongs
        (tmp_path / "x.nk").write_text(Path("examples/nats/xkey.nk").read_text())
        keys = {"issuer_seed_file": str(tmp_path / "x.nk")}
    doc = {"url": "nats://127.0.0.1:4222", "user": "auth", "password": "p",
           "issuer_seed_file": "examples/nats/issuer.nk", "account": "APP", **keys}
    with pytest.raises(ConfigError) as caught:
        settings_from_document({"nats": doc})
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_an_unreachable_server_is_retried_and_readyz_says_so(idp: LocalIssuer, tmp_path: Path) -> None:
    server = NatsServer()  # never started
    settings = worker_settings(idp, server, tmp_path)
    thread = ServerThread(settings)
    thread._thread.start()
    try:
        import urllib.error
        import urllib.request
        url = f"http://127.0.0.1:{settings.http_listen[1]}/readyz"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                pytest.fail("ready without NATS")
            except urllib.error.HTTPError as e:
                status = e.code
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert status == 503
        server.start()  # the server arrives: the callout connects, the worker is ready
        from tests.support.ports import wait_for_http
        wait_for_http(url, timeout=10)
    finally:
        thread.stop()
        server.stop()




def test_a_token_is_taken_from_auth_token_or_the_password_of_user_bearer_only() -> None:
    from extauthz.errors import CredentialAmbiguous, TokenError
    from extauthz.nats.decide import token_of

    def request(**opts: Any) -> Any:
        base = dict(server_id="N", server_name="n", user_nkey="U", client_host="h", client_id=1,
                    client_kind="Client", auth_token=None, user=None, password=None,
                    client_name="", expires=0)
        from extauthz.nats.request import AuthRequest
        return AuthRequest(**{**base, **opts})

    assert token_of(request(auth_token="t")) == "t"
    assert token_of(request(user="bearer", password="t")) == "t"
    assert token_of(request()) is None
    with pytest.raises(CredentialAmbiguous):
        token_of(request(auth_token="t", user="bearer", password="t"))
    for other in (request(user="alice", password="t"), request(user="bearer")):
        with pytest.raises(TokenError):
            token_of(other)


async def test_each_nats_decision_is_one_audit_line_and_counted(
        idp: LocalIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = NatsServer().start()
    worker = ServerThread(worker_settings(idp, server, tmp_path, audit={
        "stdout": True, "flush_interval": 0.05})).start()
    try:
        nc, error = await attempt(server, token=idp.mint(sub="wendy", groups=["orders"]))
        assert nc is not None, error
        await nc.close()
        nc, _ = await attempt(server, token=idp.mint(sub="sam", groups=["sales"]))
        assert nc is None
        assert worker.engine is not None
        families = {f.name: f for f in worker.engine.metrics.collect()}
        decisions = {(s.labels["decision"], s.labels["reason"]): s.value
                     for s in families["extauthz_nats_decisions"].samples}
        assert decisions == {("allow", "allowed"): 1, ("deny", "no_policy"): 1}
        assert families["extauthz_nats_connected"].samples[0].value == 1
        count = [s for s in families["extauthz_nats_callout_duration_seconds"].samples
                 if s.name.endswith("_count")]
        assert count[0].value == 2
        time.sleep(0.3)  # the audit flush
    finally:
        worker.stop()
        server.stop()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{") and '"transport":"nats"' in line]
    assert [(r["decision"], r["reason"], r["subject"], r["policy"]) for r in lines] == [
        ("allow", "allowed", "wendy", "orders-writer"), ("deny", "no_policy", "sam", None)]
    assert all(r["source"] == "127.0.0.1" and r["host"].startswith("N") for r in lines)


def test_serve_with_a_malformed_issuer_seed_stops_in_one_line(tmp_path: Path) -> None:
    from tests.support.cli import refused, run_cli

    seed = tmp_path / "issuer.nk"
    seed.write_text("SAnotaseed\n")
    config = tmp_path / "extauthz.yaml"
    config.write_text(json.dumps({"nats": {
        "url": "nats://127.0.0.1:4222", "user": "auth", "password": "p",
        "issuer_seed_file": str(seed), "account": "APP"}}))
    line = refused(run_cli(config, "serve"))
    assert "'nats.issuer_seed_file'" in line
    assert "give the SA… seed whose public key is the server's auth_callout.issuer" in line


async def test_serve_workers_2_puts_both_processes_in_the_queue_group(
        idp: LocalIssuer, tmp_path: Path) -> None:
    from tests.support.stack import ExtAuthz

    server = NatsServer().start()
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICY)
    service = ExtAuthz(tmp_path, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{policies}"}, "nats": nats_config(server)},
        args=["--workers", "2"]).start()
    try:
        def connected() -> int:  # workers whose callout is connected and subscribed
            text = service.admin("/metrics").body.decode()
            return sum(1 for line in text.splitlines()
                       if line.startswith("extauthz_nats_connected{") and line.endswith(" 1.0"))

        deadline = time.monotonic() + 15
        while connected() < 2:
            assert time.monotonic() < deadline, service.admin("/metrics").body.decode()
            time.sleep(0.1)
        token = idp.mint(groups=["orders"])
        for _ in range(16):
            nc, error = await attempt(server, token=token)
            assert nc is not None, error
            await nc.close()
        time.sleep(0.5)  # the audit flush
    finally:
        service.stop()
        server.stop()
    assert service.process is not None
    records = [json.loads(line) for line in service.process.output().splitlines()
               if line.startswith("{") and '"transport":"nats"' in line]
    assert len(records) == 16
    # each process has its own decision-id prefix: both answered
    assert len({r["decision_id"].split("-")[0] for r in records}) == 2
