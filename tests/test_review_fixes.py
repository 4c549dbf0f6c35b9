"""Defects found in review, each pinned by a test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from extauthz import errors
from extauthz.clock import FakeClock
from extauthz.identity.jwks import HttpFetcher, IssuerKeys
from extauthz.identity.verify import TokenVerifier
from extauthz.redis_hash import redacted_url
from tests.conftest import make_settings
from tests.support.issuer import LocalIssuer
from tests.support.ports import free_port


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
    ("rediss://u:s3cret@h:6380/0?ssl_ca_certs=/ca.pem&password=x",
     "rediss://u:***@h:6380/0?ssl_ca_certs=/ca.pem&password=***"),
])
def test_redis_passwords_are_hidden_wherever_the_url_holds_them(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


class _Slow(BaseHTTPRequestHandler):
    """A JWKS endpoint that sends its body in two pieces, or redirects."""

    jwks: dict[str, Any] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "/jwks")
            self.end_headers()
            return
        data = json.dumps(self.jwks).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        half = len(data) // 2
        self.wfile.write(data[:half])
        self.wfile.flush()
        time.sleep(0.2)
        self.wfile.write(data[half:])


@pytest.fixture
def slow_jwks(issuer: LocalIssuer) -> Iterator[str]:
    _Slow.jwks = issuer.jwks()
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Slow)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


async def test_a_jwks_sent_in_pieces_is_read_whole(issuer: LocalIssuer, slow_jwks: str) -> None:
    settings = make_settings(issuer)
    iss = settings.issuers[0].__class__(**{**settings.issuers[0].__dict__,
                                           "jwks_uri": f"{slow_jwks}/jwks"})
    fetcher = HttpFetcher(5.0)
    keys = IssuerKeys(iss, settings.jwks, fetcher, FakeClock())
    assert await keys.refresh(), keys.last_error
    await fetcher.close()


async def test_jwks_redirects_are_not_followed(issuer: LocalIssuer, slow_jwks: str) -> None:
    settings = make_settings(issuer)
    iss = settings.issuers[0].__class__(**{**settings.issuers[0].__dict__,
                                           "jwks_uri": f"{slow_jwks}/redirect"})
    fetcher = HttpFetcher(5.0)
    keys = IssuerKeys(iss, settings.jwks, fetcher, FakeClock())
    assert not await keys.refresh()
    assert keys.last_error is not None
    assert "HTTP 302" in keys.last_error
    await fetcher.close()


async def test_an_https_issuer_may_not_publish_its_keys_over_http() -> None:
    from extauthz.config import settings_from_document

    settings = settings_from_document({"issuers": [{"issuer": "https://idp.example", "audiences": ["a"]}]})
    keys = IssuerKeys(settings.issuers[0], settings.jwks, HttpFetcher(1.0), FakeClock())
    assert keys._schemes == ("https://",)


async def _verifier(issuer: LocalIssuer) -> tuple[TokenVerifier, HttpFetcher]:
    settings = make_settings(issuer)
    fetcher = HttpFetcher(2.0)
    keys = IssuerKeys(settings.issuers[0], settings.jwks, fetcher, FakeClock())
    await keys.refresh()
    return TokenVerifier(settings, {issuer.issuer: keys}, FakeClock(now_wall=time.time())), fetcher


async def test_an_unverified_email_is_not_passed_on(issuer: LocalIssuer) -> None:
    verifier, fetcher = await _verifier(issuer)
    assert (await verifier.verify(issuer.mint("ES256", email_verified=False))).email is None
    assert (await verifier.verify(issuer.mint("ES256"))).email == "alice@example.com"
    await fetcher.close()


async def test_a_group_with_a_comma_is_refused(issuer: LocalIssuer) -> None:
    verifier, fetcher = await _verifier(issuer)
    with pytest.raises(errors.TokenClaimsInvalid, match="comma"):
        await verifier.verify(issuer.mint("ES256", groups=["dev", "a,sre"]))
    await fetcher.close()


async def test_the_step_up_cookie_meets_only_policies_that_accept_webauthn(issuer: LocalIssuer) -> None:
    from extauthz.authorize import Authorizer
    from extauthz.policy.model import parse_policies
    from extauthz.policy.store import PolicySet
    from extauthz.policy.sync import PolicySnapshot
    from extauthz.request import RequestView
    from extauthz.stepup.cookie import load_signing_key, new_signing_key_pem
    from extauthz.stepup.gate import StepupGate

    settings = make_settings(issuer)
    clock = FakeClock(now_wall=time.time())
    verifier, fetcher = await _verifier(issuer)
    snapshot = PolicySnapshot(clock)
    snapshot.install(PolicySet("1", tuple(parse_policies([
        {"id": "ours", "match": {"paths": [{"prefix": "/ours/"}]}, "require": {"stepup": {}}},
        {"id": "idp-only", "match": {"paths": [{"prefix": "/idp/"}]},
         "require": {"stepup": {"acr_values": ["phr"]}}}]))))
    keys = StepupGate(cookie_name=settings.stepup.cookie_name, lifetime=3600, clock=clock,
                      revocations=None)
    keys.use_key(load_signing_key(new_signing_key_pem(), "k"))
    assert keys.cookies is not None
    a = Authorizer(settings=settings, verifier=verifier, policies=snapshot, stepups=keys, clock=clock)
    token = issuer.mint("ES256")
    cookie = keys.cookies.mint(await verifier.verify(token), "cred")

    def view(path: str, accept: str = "application/json") -> RequestView:
        return RequestView(method="GET", scheme="https", host="h", path=path, query="",
                           headers={"authorization": f"Bearer {token}", "accept": accept,
                                    "cookie": f"__Host-extauthz-stepup={cookie}"},
                           context_extensions={}, source_address="", request_id="")

    assert (await a.check(view("/ours/x"))).allowed
    denied = await a.check(view("/idp/x"))
    assert (denied.allowed, denied.status) == (False, 401)
    browser = await a.check(view("/idp/x", "text/html"))
    assert browser.status == 401  # no redirect to a ceremony that cannot satisfy it
    await fetcher.close()
