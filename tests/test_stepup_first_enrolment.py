"""The first passkey needs a recent IdP sign-in or an operator's one-time allowance: a token
alone (a stolen copy) cannot enrol an authenticator and lock the real user out."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import settings_from_document
from extauthz.stepup.enrolment import GRANT, SIGNIN, FirstEnrolment, GrantUsed
from extauthz.stepup.store import (
    FileStepupStore,
    Passkey,
    RedisStepupStore,
    StepupStore,
    user_key,
)
from tests.support.cli import run_cli
from tests.support.clock import FakeClock
from tests.support.inproc import ServerThread
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.requests import bearer
from tests.support.settings import serving_settings
from tests.support.stack import ORIGIN, http_request
from tests.support.webauthn import VECTORS, Rig, ident

LOGIN = "https://login.example.com/authorize?prompt=login&rd={rd}"


@pytest.fixture(scope="module")
def server(idp: LocalIssuer) -> Iterator[ServerThread]:
    thread = ServerThread(serving_settings(idp, login_url=LOGIN)).start()
    yield thread
    thread.stop()


def call(server: ServerThread, path: str, token: str, body: dict[str, Any] | None = None
         ) -> tuple[int, dict[str, str], Any]:
    """GET the page, or POST ``body`` to it as the site's own page does; the status, the
    headers and the answer (JSON, or the page's text)."""
    url = f"http://127.0.0.1:{server.settings.http_listen[1]}{path}"
    if body is None:
        r = http_request(url, headers=bearer(token), follow_redirects=True)
    else:
        r = http_request(url, method="POST", body=json.dumps(body).encode(), follow_redirects=True,
                         headers={**bearer(token), "content-type": "application/json", "origin": ORIGIN})
    return r.status, r.headers, (r.json() if "json" in r.headers.get("content-type", "") else
                                 r.body.decode())


def cli_config(tmp_path: Path, server: ServerThread, idp: LocalIssuer) -> Path:
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"state_file": server.settings.store.state_file}}))
    return config


@pytest.mark.parametrize("auth_time", [None, -301, -3600], ids=["absent", "301s-old", "1h-old"])
def test_a_token_without_a_recent_sign_in_cannot_add_a_first_passkey(
    server: ServerThread, idp: LocalIssuer, auth_time: int | None
) -> None:
    sub = f"thief-{uuid.uuid4().hex[:6]}"
    token = idp.mint("ES256", sub=sub,
                     auth_time=None if auth_time is None else int(time.time()) + auth_time)
    for path, body in (("/.extauthz/webauthn/register/begin", {}),
                       ("/.extauthz/webauthn/register/finish", {"credential": {"response": {}}})):
        status, headers, answer = call(server, path, token, body)
        assert status == 401, path
        assert answer["error"] == "insufficient_user_authentication"
        assert answer["max_age"] == 300
        assert answer["error_description"].startswith(
            "To add your first passkey, your sign-in must be less than 5 minutes old.")
        assert answer["signin_url"] == ("https://login.example.com/authorize?prompt=login&rd="
                                        "%2F.extauthz%2Fwebauthn%2Fregister")
        assert headers["www-authenticate"] == (
            'Bearer realm="extauthz", error="insufficient_user_authentication", '
            'error_description="a recent sign-in '
            'is required to add a first passkey", max_age="300"')
    status, _, listed = call(server, "/.extauthz/webauthn/passkeys", token)
    assert (status, listed["passkeys"]) == (200, [])


def test_a_fresh_sign_in_may_begin_a_first_enrolment(server: ServerThread, idp: LocalIssuer) -> None:
    token = idp.mint("ES256", sub="fresh-fay", auth_time=int(time.time()) - 10)
    status, _, answer = call(server, "/.extauthz/webauthn/register/begin", token, {})
    assert status == 200
    assert answer["options"]["authenticatorSelection"]["userVerification"] == "required"


def test_the_register_page_asks_for_a_new_sign_in_and_links_back_to_itself(
    server: ServerThread, idp: LocalIssuer
) -> None:
    stale = idp.mint("ES256", sub="stale-sam", auth_time=int(time.time()) - 3600)
    status, headers, page = call(server, "/.extauthz/webauthn/register?rd=%2Fpayments%2Fx", stale)
    assert status == 401
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "<h1>Sign in again</h1>" in page
    assert "your sign-in must be less than 5 minutes old" in page
    assert ('<a id="signin" class="button" href="https://login.example.com/authorize?prompt=login&amp;rd='
            '%2F.extauthz%2Fwebauthn%2Fregister%3Frd%3D%252Fpayments%252Fx">Sign in again</a>') in page
    assert 'id="enrol"' not in page
    fresh = idp.mint("ES256", sub="stale-sam", auth_time=int(time.time()))
    status, _, page = call(server, "/.extauthz/webauthn/register?rd=%2Fpayments%2Fx", fresh)
    assert status == 200
    assert 'id="enrol"' in page


def test_an_operator_allowance_admits_a_stale_token_and_outlives_a_failed_registration(
    server: ServerThread, idp: LocalIssuer, tmp_path: Path
) -> None:
    stale = idp.mint("ES256", sub="lost-lou", auth_time=int(time.time()) - 3600)
    begin = "/.extauthz/webauthn/register/begin"
    assert call(server, begin, stale, {})[0] == 401
    config = cli_config(tmp_path, server, idp)
    granted = run_cli(config, "webauthn", "allow-enrolment", "--user", "lost-lou", "--ttl", "600")
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.startswith(f"lost-lou ({idp.issuer}) may add one first passkey until ")
    assert call(server, begin, stale, {})[0] == 200
    fake = {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                           "response": {"clientDataJSON": "e30", "attestationObject": "oA"}}}
    status, _, answer = call(server, "/.extauthz/webauthn/register/finish", stale, fake)
    assert status == 400
    assert answer["error_description"].startswith("The new passkey could not be verified")
    assert call(server, begin, stale, {})[0] == 200  # a failed registration used nothing up


def test_allow_enrolment_refuses_what_could_never_apply(
    server: ServerThread, idp: LocalIssuer, tmp_path: Path
) -> None:
    config = cli_config(tmp_path, server, idp)
    wrong = run_cli(config, "webauthn", "allow-enrolment", "--subject", "amy", "--issuer", idp.issuer + "/")
    assert wrong.returncode == 2
    assert f"--issuer '{idp.issuer}/' is not a configured issuer (exact match)" in wrong.stderr
    assert run_cli(config, "webauthn", "allow-enrolment", "--subject", "amy", "--ttl", "0").returncode == 2
    assert run_cli(config, "webauthn", "allow-enrolment", "--subject", " amy").returncode == 2
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"store": {"state_file": server.settings.store.state_file}}))
    none = run_cli(bare, "webauthn", "allow-enrolment", "--subject", "amy")
    assert none.returncode == 2
    assert "the config names no issuers" in none.stderr
    store = FileStepupStore(server.settings.store.state_file, SYSTEM_CLOCK)
    asyncio.run(store.save_passkey(user_key(idp.issuer, "amy"), Passkey(
        "c1", "pk", 0, "k", 1, None, (), idp.issuer, "amy")))
    has = run_cli(config, "webauthn", "allow-enrolment", "--subject", "amy")
    assert has.returncode == 2
    assert "amy" in has.stderr
    assert "already has 1 passkey(s)" in has.stderr
    assert not asyncio.run(store.enrolment_granted(user_key(idp.issuer, "amy")))


def test_the_step_up_page_says_when_the_newest_passkey_was_added(
    server: ServerThread, idp: LocalIssuer
) -> None:
    store = FileStepupStore(server.settings.store.state_file, SYSTEM_CLOCK)
    user = user_key(idp.issuer, "nora")
    asyncio.run(store.save_passkey(user, Passkey("c1", "pk", 0, "old key", 1_700_000_000, None, (),
                                                 idp.issuer, "nora")))
    asyncio.run(store.save_passkey(user, Passkey("c2", "pk", 0, "<b>new</b> key", 1_750_000_000,
                                                 None, (), idp.issuer, "nora")))
    status, _, page = call(server, "/.extauthz/stepup?rd=%2Fx", idp.mint("ES256", sub="nora"))
    assert status == 200
    assert ('<p id="added" class="small">Your newest passkey, \u201c&lt;b&gt;new&lt;/b&gt; key'
            '\u201d, was added on 2025-06-15 at 15:06 UTC. If you did not add it, tell an '
            'administrator.</p>') in page
    status, _, page = call(server, "/.extauthz/stepup?rd=%2Fx", idp.mint("ES256", sub="nobody"))
    assert 'id="added"' not in page


def first_enrolment(store: StepupStore, clock: FakeClock) -> FirstEnrolment:
    settings = settings_from_document({"stepup": {"first_enrolment_max_age": 120}})
    return FirstEnrolment(settings, store, clock.wall)


async def test_a_sign_in_counts_as_fresh_only_within_the_window(tmp_path: Path) -> None:
    clock = FakeClock(now_wall=1_800_000_000.0)
    first = first_enrolment(FileStepupStore(str(tmp_path / "s.json"), clock), clock)
    now = int(clock.wall())
    for auth_time, allowed in ((now, SIGNIN), (now - 120, SIGNIN), (now - 121, None),
                               (now + 30, SIGNIN), (now + 31, None), (None, None)):
        assert await first.allowed_by(replace(ident(), auth_time=auth_time)) == allowed, auth_time


async def test_an_allowance_is_used_up_by_the_registration_that_succeeds(tmp_path: Path) -> None:
    clock = FakeClock()
    rig = Rig(FileStepupStore(str(tmp_path / "s.json"), clock), clock)
    first = first_enrolment(rig.store, clock)
    who = ident()  # no auth_time: only the allowance admits this user
    user = user_key(who.issuer, who.subject)
    await rig.store.grant_enrolment(user, who.issuer, who.subject, 600)
    assert await first.allowed_by(who) == GRANT
    await rig.seed("registration", who)
    await rig.ceremonies.register(who, copy.deepcopy(VECTORS["registration"]["credential"]), "key",
                                  before_save=first.use_grant(who, GRANT))
    assert [p.name for p in await rig.store.passkeys(user)] == ["key"]
    assert await first.allowed_by(who) is None  # used up

    await rig.store.remove_all(user)
    await rig.seed("registration", who)  # a racing second registration on the same allowance
    with pytest.raises(GrantUsed):
        await rig.ceremonies.register(who, copy.deepcopy(VECTORS["registration"]["credential"]),
                                      "again", before_save=first.use_grant(who, GRANT))
    assert await rig.store.passkeys(user) == []


async def test_a_first_passkey_after_a_fresh_sign_in_also_clears_a_leftover_allowance(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    rig = Rig(FileStepupStore(str(tmp_path / "s.json"), clock), clock)
    first = first_enrolment(rig.store, clock)
    who = replace(ident(), auth_time=int(clock.wall()))
    user = user_key(who.issuer, who.subject)
    await rig.store.grant_enrolment(user, who.issuer, who.subject, 600)
    await rig.seed("registration", who)
    await rig.ceremonies.register(who, copy.deepcopy(VECTORS["registration"]["credential"]), "key",
                                  before_save=first.use_grant(who, SIGNIN))
    assert not await rig.store.enrolment_granted(user)


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_an_allowance_is_taken_by_exactly_one_of_many_parallel_takers_and_expires(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = FakeClock()
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        store: StepupStore = RedisStepupStore(server.url, f"g{uuid.uuid4().hex[:6]}:", 2.0)
    else:
        store = FileStepupStore(str(tmp_path / "s.json"), clock)
    await store.grant_enrolment("u", "https://idp", "alice", 60)
    assert await store.enrolment_granted("u")
    taken = await asyncio.gather(*(store.take_enrolment_grant("u") for _ in range(20)))
    assert taken.count(True) == 1
    await store.grant_enrolment("u", "https://idp", "alice", 60)
    if kind == "redis":
        key = next(iter(server.client().keys("*webauthn:enrolment-grant:u")))
        assert 0 < server.client().ttl(key) <= 60
    else:
        clock.advance(61)
        assert not await store.enrolment_granted("u")
    await store.close()
