"""Bad input to every ceremony endpoint: a clear 4xx, and nothing stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from extauthz.stepup.http import safe_rd
from tests.support.inproc import ServerThread
from tests.support.issuer import LocalIssuer
from tests.support.requests import bearer
from tests.support.settings import serving_settings
from tests.support.stack import ORIGIN, http_get, post_json


@pytest.fixture(scope="module")
def server(idp: LocalIssuer) -> Iterator[ServerThread]:
    thread = ServerThread(serving_settings(idp)).start()
    yield thread
    thread.stop()


def post(server: ServerThread, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """The status and the JSON answer (or the raw body, when it is not JSON)."""
    r = post_json(f"http://127.0.0.1:{server.settings.http_listen[1]}{path}", body, headers)
    try:
        return r.status, json.loads(r.body or b"null")
    except ValueError:
        return r.status, r.body


ENDPOINTS = ["/.extauthz/stepup/begin", "/.extauthz/stepup/finish",
             "/.extauthz/webauthn/register/begin", "/.extauthz/webauthn/register/finish",
             "/.extauthz/webauthn/passkeys/remove"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_post_without_a_site_origin_is_refused(server: ServerThread, idp: LocalIssuer, path: str) -> None:
    auth = {"authorization": f"Bearer {idp.mint('ES256')}"}
    for headers in (auth, {**auth, "origin": "https://evil.example"}):
        status, body = post(server, path, b"{}", headers)
        assert status == 403
        assert body["error_description"].startswith("cross-site request refused")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_post_without_a_valid_token_is_401(server: ServerThread, path: str) -> None:
    status, body = post(server, path, b"{}", {"origin": ORIGIN, "authorization": "Bearer x.y.z"})
    assert (status, body["error"]) == (401, "unauthorized")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b""])
def test_garbage_bodies_are_400_with_a_message(
    server: ServerThread, idp: LocalIssuer, path: str, payload: bytes
) -> None:
    status, body = post(server, path, payload, {"origin": ORIGIN,
                                                "authorization": f"Bearer {idp.mint('ES256')}"})
    assert status == 400
    assert body["error_description"] == "the body must be a JSON object"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_huge_body_is_refused(server: ServerThread, idp: LocalIssuer, path: str) -> None:
    big = json.dumps({"credential": {"response": {"x": "a" * 200_000}}}).encode()
    status, _ = post(server, path, big, {"origin": ORIGIN,
                                         "authorization": f"Bearer {idp.mint('ES256')}"})
    assert status == 413


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/.extauthz/webauthn/register/finish", {}, "The request has no passkey response"),
    ("/.extauthz/webauthn/register/finish", {"credential": {"id": "x", "response": {}}},
     "This enrolment expired or was already used"),
    ("/.extauthz/webauthn/register/finish", {"name": "x" * 65, "credential": {"response": {}}},
     "Give the passkey a name of 1 to 64 characters"),
    ("/.extauthz/webauthn/register/finish",
     {"name": "\x1b[2J\r\nFORGED row", "credential": {"response": {}}},
     "A passkey name cannot hold control or other invisible characters"),
    ("/.extauthz/webauthn/register/finish", {"name": "key\u202e", "credential": {"response": {}}},
     "A passkey name cannot hold control or other invisible characters"),
    ("/.extauthz/webauthn/register/finish", {"name": 7, "credential": {"response": {}}},
     "Give the passkey a name of 1 to 64 characters"),
    ("/.extauthz/stepup/finish", {"credential": "nope"}, "The request has no passkey response"),
    ("/.extauthz/stepup/finish", {"credential": {"id": "x", "response": {}}},
     "This sign-in expired or was already used"),
    ("/.extauthz/webauthn/passkeys/remove", {}, "Say which passkey to remove"),
    ("/.extauthz/webauthn/passkeys/remove", {"id": "nope"}, "No such passkey for"),
])
def test_missing_or_wrong_fields_are_400_and_store_nothing(
    server: ServerThread, idp: LocalIssuer, path: str, body: dict[str, Any], message: str
) -> None:
    token = idp.mint("ES256", sub="mallory", auth_time=int(time.time()))  # a fresh sign-in
    headers = {"origin": ORIGIN, "authorization": f"Bearer {token}"}
    status, answer = post(server, path, json.dumps(body).encode(), headers)
    assert status == 400
    assert message in answer["error_description"]
    url = f"http://127.0.0.1:{server.settings.http_listen[1]}/.extauthz/webauthn/passkeys"
    listed = http_get(url, bearer(token))
    assert (listed.status, listed.json()["passkeys"]) == (200, [])


def test_a_registration_on_a_real_begin_with_a_fake_credential_is_refused(
    server: ServerThread, idp: LocalIssuer
) -> None:
    token = idp.mint("ES256", sub="eve", auth_time=int(time.time()))  # a fresh sign-in
    headers = {"origin": ORIGIN, "authorization": f"Bearer {token}"}
    status, begun = post(server, "/.extauthz/webauthn/register/begin", b"{}", headers)
    assert status == 200
    assert begun["options"]["rp"]["id"] == "localhost"
    assert begun["options"]["authenticatorSelection"]["userVerification"] == "required"
    assert {p["alg"] for p in begun["options"]["pubKeyCredParams"]} == {-8, -7, -257}
    fake = {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                           "response": {"clientDataJSON": "e30", "attestationObject": "oA"}}}
    status, body = post(server, "/.extauthz/webauthn/register/finish", json.dumps(fake).encode(),
                        headers)
    assert status == 400
    assert body["error_description"].startswith("The new passkey could not be verified")


@pytest.mark.parametrize(("rd", "expected"), [
    ("/payments/x?y=1", "/payments/x?y=1"), ("/", "/"), (None, "/"), ("", "/"),
    ("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("/ok\r\nset-cookie: x", "/"), ("evil.example", "/"),
])
def test_rd_is_a_same_site_path_or_the_root(rd: str | None, expected: str) -> None:
    assert safe_rd(rd) == expected


async def test_adding_a_second_passkey_or_removing_one_needs_a_fresh_step_up(
    server: ServerThread, idp: LocalIssuer
) -> None:
    from extauthz.clock import SYSTEM_CLOCK
    from extauthz.stepup.store import FileStepupStore, Passkey, user_key

    store = FileStepupStore(server.settings.store.state_file, SYSTEM_CLOCK)
    await store.save_passkey(user_key(idp.issuer, "gina"),
                             Passkey("c1", "pk", 0, "first", 1, None, (), idp.issuer, "gina"))
    headers = {"origin": ORIGIN, "authorization": f"Bearer {idp.mint('ES256', sub='gina')}"}
    for path, body in (("/.extauthz/webauthn/register/begin", b"{}"),
                       ("/.extauthz/webauthn/register/finish", b'{"credential": {"response": {}}}'),
                       ("/.extauthz/webauthn/passkeys/remove", b'{"id": "c1"}')):
        status, answer = post(server, path, body, headers)
        assert (status, answer["error"]) == (403, "stepup_required"), path
        assert answer["stepup_url"].startswith("/.extauthz/stepup?rd=%2F.extauthz%2F")
    assert [p.name for p in await store.passkeys(user_key(idp.issuer, "gina"))] == ["first"]
