"""In front of a kube-apiserver: no reserved (system:) name is ever impersonated, and no
client-sent front-proxy identity (X-Remote-*) reaches any upstream."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from extauthz.config import settings_from_document
from extauthz.identity.model import Identity
from extauthz.identity_headers import (
    HeaderNames,
    ImpersonationRefused,
    headers_to_remove,
    identity_headers,
)
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.requests import identity as verified
from tests.support.requests import request_view
from tests.support.stack import ExtAuthz, Gateway

NAMES = HeaderNames.with_prefix("x-auth-")
IMPERSONATING = settings_from_document({
    "headers": {"kubernetes_impersonation": True},
    "issuers": [{"issuer": "https://idp.example.com", "audiences": ["kubernetes"],
                 "username_prefix": "idp:", "groups_prefix": "idp:"}]}).headers


def identity(username: str, groups: tuple[str, ...]) -> Identity:
    return verified("u1", username=username, audiences=("kubernetes",), groups=groups,
                    expires_at=0.0)


def test_a_reserved_group_is_never_impersonated_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="extauthz.identity_headers"):
        out = identity_headers(identity("idp:alice", ("idp:sre", "system:masters", " system:nodes")),
                               NAMES, IMPERSONATING, policy_id=None)
    assert [v for k, v in out if k == "impersonate-group"] == ["idp:sre"]
    assert ("impersonate-user", "idp:alice") in out
    assert "not impersonating the reserved group 'system:masters' for 'idp:alice'" in caplog.text
    assert "reserved group ' system:nodes'" in caplog.text


@pytest.mark.parametrize("username", ["system:admin", "system:serviceaccount:kube-system:x",
                                      " system:admin", "system:kube-controller-manager"])
def test_a_reserved_username_fails_closed_instead_of_being_impersonated(username: str) -> None:
    with pytest.raises(ImpersonationRefused, match="refusing to impersonate the reserved username"):
        identity_headers(identity(username, ("idp:sre",)), NAMES, IMPERSONATING, policy_id=None)


def test_without_impersonation_reserved_looking_names_are_only_identity_headers() -> None:
    plain = settings_from_document({}).headers
    out = identity_headers(identity("system:admin", ("system:masters",)), NAMES, plain,
                           policy_id=None)
    assert not [k for k, _ in out if k.startswith("impersonate-")]


def test_client_sent_front_proxy_headers_are_removed_in_every_spelling() -> None:
    sent = request_view("/api", host="kube.example.com", headers={
        "x-remote-user": "system:admin", "x-remote-group": "system:masters", "x-remote-uid": "0",
        "x-remote-extra-scopes": "all", "x_remote_user": "admin", "x-remoteuser": "kept",
        "x-request-id": "r1"})
    removed = headers_to_remove(sent, NAMES, IMPERSONATING, ())
    assert set(removed) == {"x-remote-user", "x-remote-group", "x-remote-uid",
                            "x-remote-extra-scopes", "x_remote_user"}


@pytest.mark.e2e
def test_front_proxy_headers_never_reach_the_upstream_through_envoy(
    idp: LocalIssuer, tmp_path: Path
) -> None:
    cfg = {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE], "username_claim": "email",
                        "username_prefix": "authgate:", "groups_prefix": "authgate:"}],
           "default_action": "authenticated",
           "headers": {"kubernetes_impersonation": True}}
    service = ExtAuthz(tmp_path, cfg).start()
    gateway = Gateway(tmp_path, service).start()
    try:
        r = gateway.get("/api/v1/secrets", {
            "authorization": f"Bearer {idp.mint('ES256', groups=['system:masters', 'sre'])}",
            "x-remote-user": "system:admin", "x-remote-group": "system:masters",
            "x-remote-extra-scopes": "everything"})
        assert r.status == 200
        seen = r.json()["headers"]
        assert not [k for k in seen if k.startswith("x-remote-")]
        assert seen["impersonate-user"] == "authgate:alice@example.com"
        groups = seen["impersonate-group"]
        for group in groups if isinstance(groups, list) else [groups]:
            assert group.startswith("authgate:")
    finally:
        gateway.stop()
        service.stop()
