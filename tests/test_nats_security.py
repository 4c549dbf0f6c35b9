"""The NATS callout's security review: the kick table under churn, the step-up window on live
connections, NATS URLs without their password, and requests from servers not listed in
``nats.server_keys``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from extauthz.config import load_settings, settings_from_document
from extauthz.engine import Engine, build_engine
from extauthz.errors import ConfigError
from extauthz.nats import jwt as natsjwt
from extauthz.nats import kick
from extauthz.nats.callout import SUBJECT, Callout
from extauthz.nats.decide import Decider
from extauthz.nats.nkey import Kind, SigningPair
from extauthz.nats.request import AuthRequest, BadAuthRequest, UnknownServer, parse_request
from extauthz.policy.match import PolicyIndex
from extauthz.policy.model import parse_policies
from tests.support.clock import FakeClock
from tests.support.issuer import LocalIssuer
from tests.support.nats import NatsServer, example_issuer, nats_config
from tests.support.requests import identity
from tests.support.settings import serving_settings
from tests.test_nats_protocol import _request_claims, attempt

PASSWORD = "Hunter2Secret"  # the password that must never be shown

POLICIES = """
id: orders-writer
require: {authenticated: true, claims: {groups: [orders]}}
nats:
  publish: {allow: ["orders.>"]}
  subscribe: {allow: ["orders.>", "_INBOX.>"]}
---
id: strong-writers
priority: 10
require: {authenticated: true, claims: {groups: [strong]}, stepup: {max_age: 5, acr_values: [phr]}}
nats:
  publish: {allow: ["orders.>"]}
"""


def settings(idp: LocalIssuer, server: NatsServer, tmp: Path, **nats: Any) -> Any:
    policies = tmp / "policies.yaml"
    policies.write_text(POLICIES)
    return serving_settings(idp, store={"url": f"file://{policies}", "poll_interval": 0.1},
                            audit={"stdout": False}, nats=nats_config(server, **nats))


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[Callout]:
    """A callout (and its kicker) on this loop, connected."""
    await engine.load_once()
    callout = Callout(engine)
    task = asyncio.create_task(callout.run())
    try:
        for _ in range(100):
            if callout.connected and callout.kicker._nc is not None:
                break
            await asyncio.sleep(0.05)
        assert callout.connected, callout.note
        yield callout
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await engine.close()


async def until(condition: Any, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


# 1. The kick table


def kicker_engine(idp: LocalIssuer, tmp_path: Path, clock: FakeClock) -> Engine:
    return build_engine(settings(idp, NatsServer(), tmp_path), clock=clock)


def test_expired_entries_leave_the_kick_table_so_a_later_connection_is_still_tracked(
        idp: LocalIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kick, "MAX_TRACKED", 50)
    clock = FakeClock()
    kicker = kick.Kicker(kicker_engine(idp, tmp_path, clock))
    for cid in range(50):  # churn: connections whose tokens have since expired
        kicker.remember("NSERVER", cid, identity("someone", expires_at=clock.wall() + 10))
    clock.advance(20)
    kicker.remember("NSERVER", 999, identity("mallory", expires_at=clock.wall() + 3600))
    assert ("NSERVER", 999) in kicker._live  # a revocation of mallory would kick
    assert kicker.tracked == 1
    assert kicker.not_tracked == 0


def test_a_full_kick_table_counts_what_it_does_not_track_and_warns_once_a_minute(
        idp: LocalIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kick, "MAX_TRACKED", 50)
    clock = FakeClock()
    kicker = kick.Kicker(kicker_engine(idp, tmp_path, clock))
    caplog.set_level(logging.WARNING, "extauthz.nats")
    for cid in range(55):
        kicker.remember("NSERVER", cid, identity("someone"))
    clock.advance(61)
    kicker.remember("NSERVER", 100, identity("someone"))
    assert (kicker.tracked, kicker.not_tracked) == (50, 6)
    warnings = [r.getMessage() for r in caplog.records if "not tracked" in r.getMessage()
                or "the most" in r.getMessage()]
    assert len(warnings) == 2, warnings


async def test_a_disconnect_event_naming_client_true_forgets_no_one(
        idp: LocalIssuer, tmp_path: Path) -> None:
    """True == 1 in Python: an event whose client id is `true` must not forget client 1."""
    from nats.aio.msg import Msg

    kicker = kick.Kicker(kicker_engine(idp, tmp_path, FakeClock()))
    kicker.remember("NSERVER", 1, identity("mallory"))
    event = json.dumps({"server": {"id": "NSERVER"}, "client": {"id": True}}).encode()
    await kicker._on_disconnect(Msg(None, subject="x", data=event))  # type: ignore[arg-type]
    assert ("NSERVER", 1) in kicker._live


async def test_a_closed_connection_is_forgotten_by_the_kicker(
        idp: LocalIssuer, nats_server: NatsServer, tmp_path: Path) -> None:
    async with running(build_engine(settings(idp, nats_server, tmp_path))) as callout:
        nc, error = await attempt(nats_server, token=idp.mint(sub="wendy", groups=["orders"]))
        assert nc is not None, error
        await until(lambda: callout.kicker.tracked == 1)
        await nc.close()
        await until(lambda: callout.kicker.tracked == 0)


async def test_a_live_connection_no_policy_allows_any_more_is_ended(
        idp: LocalIssuer, nats_server: NatsServer, tmp_path: Path) -> None:
    engine = build_engine(settings(idp, nats_server, tmp_path))
    async with running(engine):
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        nc, error = await attempt(nats_server, token=idp.mint(sub="wendy", groups=["orders"]),
                                  closed_cb=on_closed)
        assert nc is not None, error
        try:
            engine.policies.index = PolicyIndex(parse_policies(
                [{"id": "nobody", "require": {"claims": {"groups": ["admins"]}},
                  "nats": {"publish": {"allow": ["x"]}}}], "test"), "changed")
            await asyncio.wait_for(closed.wait(), 3)
        finally:
            await nc.close()
            if nc._transport is not None:  # nats-py leaves a closed socket to the gc
                nc._transport.close()


async def test_a_kick_that_fails_keeps_its_connection_tracked_and_is_tried_again(
        idp: LocalIssuer, nats_server: NatsServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A kick request can fail (no responder, a timeout while NATS reconnects): the
    connection was forgotten first, so a revoked or disallowed user kept it until expiry."""
    engine = build_engine(settings(idp, nats_server, tmp_path))
    caplog.set_level(logging.WARNING, "extauthz.nats")
    async with running(engine) as callout:
        # a connection on a server id nobody answers for: every kick of it fails
        callout.kicker.remember("NNOSUCHSERVER", 7, identity("mallory"))
        engine.policies.index = PolicyIndex(parse_policies(
            [{"id": "nobody", "require": {"claims": {"groups": ["admins"]}},
              "nats": {"publish": {"allow": ["x"]}}}], "test"), "changed")

        def attempts() -> int:
            return sum("client 7 of server NNOSUCHSERVER" in r.getMessage() for r in caplog.records)

        await until(lambda: attempts() >= 2, seconds=8)
        assert ("NNOSUCHSERVER", 7) in callout.kicker._live


# 2. The step-up window


async def test_a_step_up_policys_connection_expires_when_its_max_age_does(
        idp: LocalIssuer, tmp_path: Path) -> None:
    engine = build_engine(settings(idp, NatsServer(), tmp_path))
    await engine.load_once()
    try:
        now = int(time.time())
        token = idp.mint(sub="wendy", groups=["strong"], acr="phr", auth_time=now - 2,
                         exp=now + 3600)
        request = AuthRequest(server_id=SigningPair.generate(Kind.SERVER).public,
                              server_name="n1", user_nkey=SigningPair.generate(Kind.USER).public,
                              client_host="127.0.0.1", client_id=1, client_kind="Client",
                              auth_token=token, user=None, password=None, client_name="",
                              expires=now + 2)
        answer = await Decider(engine).decide(request)
    finally:
        await engine.close()
    assert answer.decision.allowed, answer.decision
    assert answer.decision.policy_id == "strong-writers"
    response = natsjwt.decode(answer.response, Kind.ACCOUNT)
    user = natsjwt.decode(response["nats"]["jwt"], Kind.ACCOUNT)
    assert user["exp"] == now - 2 + 5
    assert answer.expires == now + 3


# 3. NATS URLs without their userinfo


def test_a_bad_nats_url_is_reported_without_its_password() -> None:
    doc = {"url": f"nat://callout:{PASSWORD}@h:4222", "user": "auth", "password": "p",
           "issuer_seed_file": "examples/nats/issuer.nk", "account": "APP"}
    with pytest.raises(ConfigError) as caught:
        settings_from_document({"nats": doc})
    assert "'nats.url'" in caught.value.message
    assert "***@h:4222" in caught.value.message
    assert PASSWORD not in caught.value.message


@pytest.mark.parametrize("url", ["nats://callout:pa/ss@h:4222", "nats://callout:p#ss@h:4222",
                                 "nats://callout:p?ss@h:4222"])
def test_a_nats_url_whose_host_depends_on_who_reads_it_is_refused(url: str) -> None:
    """urlsplit takes 'callout' for the host of nats://callout:pa/ss@h:4222: refused, not
    guessed, and the password is not in the message."""
    doc = {"url": url, "user": "auth", "password": "p",
           "issuer_seed_file": "examples/nats/issuer.nk", "account": "APP"}
    with pytest.raises(ConfigError) as caught:
        settings_from_document({"nats": doc})
    assert "is ambiguous" in caught.value.message
    assert "ss@" not in caught.value.message


async def test_a_refused_nats_url_is_logged_and_reported_without_its_password(
        idp: LocalIssuer, nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    url = f"nats://auth:{PASSWORD}@127.0.0.1:{nats_server.port}"  # the wrong password
    doc = nats_config(nats_server, url=url, user=None, password=None,
                      system_user=None, system_password=None)
    engine = build_engine(serving_settings(idp, audit={"stdout": False}, nats=doc))
    caplog.set_level(logging.DEBUG, "extauthz")
    callout = Callout(engine)
    task = asyncio.create_task(callout.run())
    try:
        await until(lambda: "cannot connect" in callout.note)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await engine.close()
    assert "***@127.0.0.1" in callout.note
    shown = [callout.note, *(r.getMessage() for r in caplog.records)]
    assert not [line for line in shown if PASSWORD in line]


# 4. nats.server_keys


def test_server_keys_are_read_from_the_environment_and_checked() -> None:
    key = SigningPair.generate(Kind.SERVER).public
    base = {"EXTAUTHZ_NATS_URL": "nats://127.0.0.1:4222", "EXTAUTHZ_NATS_USER": "auth",
            "EXTAUTHZ_NATS_PASSWORD": "p", "EXTAUTHZ_NATS_ACCOUNT": "APP",
            "EXTAUTHZ_NATS_ISSUER_SEED_FILE": "examples/nats/issuer.nk"}
    assert load_settings(None, base).nats.server_keys == frozenset()
    loaded = load_settings(None, {**base, "EXTAUTHZ_NATS_SERVER_KEYS": f"[{key}]"})
    assert loaded.nats.server_keys == frozenset({key})
    account = example_issuer().public  # an account key where a server key belongs
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {**base, "EXTAUTHZ_NATS_SERVER_KEYS": f"[{account}]"})
    assert "'nats.server_keys'" in caught.value.message


def test_a_request_signed_by_an_unlisted_server_key_is_refused() -> None:
    issuer = example_issuer().public
    listed, other = SigningPair.generate(Kind.SERVER), SigningPair.generate(Kind.SERVER)
    now = int(time.time())
    by_listed = natsjwt.encode(_request_claims(listed, issuer), listed, now)
    by_other = natsjwt.encode(_request_claims(other, issuer), other, now)
    keys = frozenset({listed.public})
    assert parse_request(by_listed, issuer=issuer, now=now, server_keys=keys).server_id == listed.public
    assert parse_request(by_other, issuer=issuer, now=now).server_id == other.public  # none: any
    with pytest.raises(UnknownServer) as caught:
        parse_request(by_other, issuer=issuer, now=now, server_keys=keys)
    assert isinstance(caught.value, BadAuthRequest)
    assert caught.value.key == other.public


async def test_an_unlisted_servers_request_is_logged_and_its_connection_never_tracked(
        idp: LocalIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    issuer = example_issuer().public
    listed, other = SigningPair.generate(Kind.SERVER), SigningPair.generate(Kind.SERVER)
    engine = build_engine(settings(idp, NatsServer(), tmp_path, server_keys=[listed.public]))
    await engine.load_once()
    callout = Callout(engine)
    caplog.set_level(logging.WARNING, "extauthz.nats")
    claims = _request_claims(other, issuer)
    claims["nats"]["connect_opts"]["auth_token"] = idp.mint(sub="wendy", groups=["orders"])
    try:
        data = natsjwt.encode(claims, other, int(time.time()))
        await callout._on_request(Msg(_client=None, subject=SUBJECT, reply="",  # type: ignore[arg-type]
                                      data=data.encode()))
    finally:
        await engine.close()
    assert callout.kicker.tracked == 0
    refusals = [r.getMessage() for r in caplog.records
                if "refused an authorization request" in r.getMessage()]
    assert len(refusals) == 1, refusals
    assert other.public in refusals[0]
    assert callout.metrics.decisions.readings() == [
        (1, {"decision": "deny", "reason": "bad_check_request"})]
