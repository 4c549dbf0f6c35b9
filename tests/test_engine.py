"""One engine decides for every way in: Check, the step-up pages, `policy explain`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from extauthz.stepup.gate import STEPUP_PAGE, stepup_url
from tests.conftest import make_settings
from tests.support.cli import run_cli
from tests.support.inproc import ServerThread
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port
from tests.support.requests import identity, request_view

ORIGIN = "http://localhost:8000"  # the default public_url's origin


@pytest.fixture(scope="module")
def server(idp: LocalIssuer) -> Iterator[ServerThread]:
    s = make_settings(idp, grpc={"listen": f"127.0.0.1:{free_port()}"},
                      http={"listen": f"127.0.0.1:{free_port()}"})
    thread = ServerThread(s).start()
    yield thread
    thread.stop()


def _post(server: ServerThread, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.settings.http_listen[1]}{path}",
                                 data=b"{}", method="POST",
                                 headers={"content-type": "application/json", "origin": ORIGIN,
                                          **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback test URL)
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_a_step_up_cookie_sent_twice_counts_on_the_passkey_pages_no_more_than_on_check(
    server: ServerThread, idp: LocalIssuer
) -> None:
    from extauthz.clock import SYSTEM_CLOCK
    from extauthz.stepup.store import FileStepupStore, Passkey, user_key

    assert server.engine is not None
    assert server.engine.stepups.cookies is not None
    store = FileStepupStore(server.settings.store.state_file, SYSTEM_CLOCK)
    await store.save_passkey(user_key(idp.issuer, "hana"),
                             Passkey("h1", "pk", 0, "first", 1, None, (), idp.issuer, "hana"))
    cookie = server.engine.stepups.cookies.mint(identity("hana", issuer=idp.issuer), "h1")
    name = server.settings.stepup.cookie_name
    bearer = {"authorization": f"Bearer {idp.mint('ES256', sub='hana')}"}

    status, _ = _post(server, "/.extauthz/webauthn/register/begin",
                      {**bearer, "cookie": f"{name}={cookie}"})
    assert status == 200  # one valid cookie: stepped up
    for twice in (f"{name}={cookie}; {name}={cookie}", f"{name}={cookie}, {name}=x"):
        status, answer = _post(server, "/.extauthz/webauthn/register/begin",
                               {**bearer, "cookie": twice})
        assert (status, answer["error"]) == (403, "stepup_required"), twice


async def test_check_and_the_pages_send_a_browser_to_one_step_up_url(
    server: ServerThread, idp: LocalIssuer
) -> None:
    from extauthz.policy.model import parse_policies
    from extauthz.policy.store import PolicySet

    assert server.engine is not None
    engine = server.engine
    original = engine.policies.index
    engine.policies.install(PolicySet("t1", tuple(parse_policies(
        [{"id": "pay", "match": {"paths": [{"prefix": "/pay/"}]}, "require": {"stepup": {}}}]))))
    try:
        view = request_view("/pay/send", idp.mint("ES256"), query="a=1&b=/",
                            headers={"accept": "text/html"})
        decision = await engine.authorizer.check(view)
    finally:
        assert original is not None
        engine.policies.index = original
    assert decision.status == 302
    assert dict(decision.response_headers)["location"] == stepup_url("/pay/send?a=1&b=/")
    assert stepup_url("/pay/send?a=1&b=/") == f"{STEPUP_PAGE}?rd=%2Fpay%2Fsend%3Fa%3D1%26b%3D%2F"
    from extauthz.clock import SYSTEM_CLOCK
    from extauthz.stepup.store import FileStepupStore, Passkey, user_key

    await FileStepupStore(server.settings.store.state_file, SYSTEM_CLOCK).save_passkey(
        user_key(idp.issuer, "ivan"), Passkey("i1", "pk", 0, "first", 1, None, (), idp.issuer, "ivan"))
    status, answer = _post(server, "/.extauthz/webauthn/passkeys/remove",
                           {"authorization": f"Bearer {idp.mint('ES256', sub='ivan')}"})
    assert (status, answer["error"]) == (403, "stepup_required")
    assert answer["stepup_url"] == stepup_url("/.extauthz/account")


def test_explain_refuses_a_store_that_lost_data_as_a_worker_does_and_writes_nothing(
    tmp_path: Path, redis_server: Any, idp: LocalIssuer
) -> None:
    prefix = f"lost{tmp_path.name[-6:]}:"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"url": redis_server.url, "prefix": prefix,
                  "state_file": str(tmp_path / "state.json")},
        "default_action": "deny", "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}]}))

    applied = run_cli(config, "policy", "apply", "-f", "-", stdin=(
        "id: docs\nmatch: {paths: [{prefix: /}]}\nrequire: {authenticated: false}\n"))
    assert applied.returncode == 0, applied.stderr
    explain = ("policy", "explain", "--host", "h", "--path", "/docs")
    assert "decision: ALLOW (allowed_public)" in run_cli(config, *explain).stdout
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        client.delete(f"{prefix}policies:revision:epoch")  # as after a flush that kept the rest
        before = sorted(client.keys(f"{prefix}*"))
        out = run_cli(config, *explain).stdout
        assert "REFUSING the store's revision" in out
        assert "[epoch_lost]" in out
        assert "decision: DENY 503 (policies_unavailable)" in out
        assert sorted(client.keys(f"{prefix}*")) == before  # no loss marker, nothing written
    finally:
        client.close()
