"""End to end: a real Envoy, the real extauthz process, an echo upstream, a real issuer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.stack import ExtAuthz, Gateway

pytestmark = pytest.mark.e2e
LOGIN = "https://login.example.com/start?rd={rd}"


def _config(idp: LocalIssuer, **extra: Any) -> dict[str, Any]:
    return {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE],
                     "algorithms": ["RS256", "ES256", "PS256", "EdDSA"]}],
        "default_action": "authenticated",
        "login_url": LOGIN,
        "realm": "example",
        **extra,
    }


@pytest.fixture(scope="module")
def stack(idp: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("e2e")
    service = ExtAuthz(work, _config(idp)).start()
    gateway = Gateway(work, service).start()
    yield gateway
    gateway.stop()
    service.stop()


def test_an_allowed_request_reaches_the_upstream_with_identity_headers(
    stack: Gateway, idp: LocalIssuer
) -> None:
    r = stack.get("/hello?x=1", {"authorization": f"Bearer {idp.mint('ES256')}"})
    assert r.status == 200
    seen = r.json()["headers"]
    assert seen["x-auth-subject"] == "alice"
    assert seen["x-auth-issuer"] == idp.issuer
    assert seen["x-auth-username"] == "alice"
    assert seen["x-auth-email"] == "alice@example.com"
    assert seen["x-auth-groups"] == "sre,dev"
    assert seen["x-auth-scopes"] == "read write"
    assert seen["x-auth-decision-id"]
    assert "authorization" not in seen  # not forwarded unless configured
    assert r.json()["path"] == "/hello?x=1"


def test_client_sent_identity_headers_never_reach_the_upstream(
    stack: Gateway, idp: LocalIssuer
) -> None:
    r = stack.get("/", {"authorization": f"Bearer {idp.mint('RS256')}",
                        "x-auth-subject": "admin", "x-auth-groups": "root",
                        "x-auth-acr": "urn:extauthz:webauthn", "x-auth-policy": "public",
                        "impersonate-user": "system:admin", "impersonate-group": "system:masters"})
    assert r.status == 200
    seen = r.json()["headers"]
    assert seen["x-auth-subject"] == "alice"
    assert seen["x-auth-groups"] == "sre,dev"
    for name in ("x-auth-acr", "x-auth-policy", "impersonate-user", "impersonate-group"):
        assert name not in seen, name


@pytest.mark.parametrize("spoof", ["x_auth_subject", "X_Auth_Subject", "impersonate_user",
                                   "x-auth_email"])
def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(
    stack: Gateway, idp: LocalIssuer, spoof: str
) -> None:
    r = stack.get("/", {"authorization": f"Bearer {idp.mint('RS256')}", spoof: "admin"})
    assert r.status == 200
    seen = r.json()["headers"]
    assert "admin" not in [v for k, v in seen.items() if k.replace("_", "-").startswith(
        ("x-auth-", "impersonate-"))]
    assert spoof.lower() not in seen


def test_a_missing_token_gets_401_with_a_bearer_challenge(stack: Gateway) -> None:
    r = stack.get("/hello", {"accept": "application/json"})
    assert r.status == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="example"'
    assert r.json() == {"error": "unauthorized",
                        "error_description": "no bearer token in the request"}


def test_a_bad_token_gets_401_invalid_token_without_echoing_it(
    stack: Gateway, idp: LocalIssuer
) -> None:
    token = idp.mint("RS256", aud="other-api")
    r = stack.get("/", {"authorization": f"Bearer {token}"})
    assert r.status == 401
    assert r.headers["www-authenticate"] == (
        'Bearer realm="example", error="invalid_token", '
        'error_description="token audience is not accepted by this service"')
    assert r.json()["error"] == "invalid_token"
    assert token not in r.body.decode()
    assert "other-api" not in r.body.decode()


def test_an_expired_token_says_so(stack: Gateway, idp: LocalIssuer) -> None:
    r = stack.get("/", {"authorization": f"Bearer {idp.mint('EdDSA', exp=1_000_000)}"})
    assert r.status == 401
    assert 'error_description="token expired"' in r.headers["www-authenticate"]


def test_a_browser_without_a_token_is_sent_to_the_login_url(stack: Gateway) -> None:
    r = stack.get("/app/page?tab=2", {"accept": "text/html,application/xhtml+xml"})
    assert r.status == 302
    assert r.headers["location"] == (
        "https://login.example.com/start?rd=%2Fapp%2Fpage%3Ftab%3D2")


def test_the_health_route_needs_no_token(stack: Gateway) -> None:
    assert stack.get("/healthz").status == 200


def test_kubernetes_impersonation_headers(idp: LocalIssuer, tmp_path: Path) -> None:
    cfg = _config(idp, headers={"kubernetes_impersonation": True, "forward_authorization": False})
    cfg["issuers"][0].update({"username_claim": "email", "username_prefix": "authgate:",
                              "groups_prefix": "authgate:"})
    service = ExtAuthz(tmp_path, cfg).start()
    gateway = Gateway(tmp_path, service).start()
    try:
        r = gateway.get("/api/v1/pods", {"authorization": f"Bearer {idp.mint('ES256')}",
                                         "impersonate-group": "system:masters"})
        assert r.status == 200
        seen = r.json()["headers"]
        assert seen["impersonate-user"] == "authgate:alice@example.com"
        # One line per group needs an Envoy that honours append_action (newer than 1.40, which
        # applies only the last value); either way only the user's own groups arrive.
        groups = seen["impersonate-group"]
        groups = groups if isinstance(groups, list) else [groups]
        assert groups
        assert set(groups) <= {"authgate:sre", "authgate:dev"}
        assert seen["x-auth-username"] == "authgate:alice@example.com"
    finally:
        gateway.stop()
        service.stop()


def test_with_the_service_stopped_envoy_fails_closed(idp: LocalIssuer, tmp_path: Path) -> None:
    service = ExtAuthz(tmp_path, _config(idp)).start()
    gateway = Gateway(tmp_path, service).start()
    try:
        token = idp.mint("RS256")
        assert gateway.get("/", {"authorization": f"Bearer {token}"}).status == 200
        assert service.stop() == 0
        r = gateway.get("/", {"authorization": f"Bearer {token}"})
        assert r.status == 503
        assert "x-auth-subject" not in r.body.decode()
    finally:
        gateway.stop()


def test_a_token_in_the_configured_cookie_is_accepted_and_forwarding_is_configurable(
    idp: LocalIssuer, tmp_path: Path
) -> None:
    cfg = _config(idp, token={"cookie": "session"}, headers={"forward_authorization": True})
    service = ExtAuthz(tmp_path, cfg).start()
    gateway = Gateway(tmp_path, service).start()
    try:
        token = idp.mint("ES256")
        r = gateway.get("/", {"cookie": f"theme=dark; session={token}"})
        assert r.status == 200
        assert r.json()["headers"]["x-auth-subject"] == "alice"
        r = gateway.get("/", {"authorization": f"Bearer {token}"})
        assert r.json()["headers"]["authorization"] == f"Bearer {token}"
    finally:
        gateway.stop()
        service.stop()
