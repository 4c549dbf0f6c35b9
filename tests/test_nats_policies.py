"""NATS policies (``nats:`` instead of ``match:``): what is refused on apply, how they stay
out of the HTTP index, which one decides, the user JWT they yield, the audit line, and
``policy explain --nats``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.audit.record import audit_record
from extauthz.decision import Decision
from extauthz.errors import PolicyInvalid
from extauthz.identity.model import Identity
from extauthz.nats import jwt as natsjwt
from extauthz.nats.decide import request_view
from extauthz.nats.nkey import Kind
from extauthz.nats.permissions import decide
from extauthz.nats.reply import allow
from extauthz.nats.request import AuthRequest
from extauthz.policy.match import PolicyIndex
from extauthz.policy.model import parse_policies, parse_policy
from extauthz.request import RequestView
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.nats import EXAMPLE, example_issuer

WRITER = {"id": "orders-writer", "require": {"claims": {"groups": ["orders"]}},
          "nats": {"publish": {"allow": ["orders.>"], "deny": ["orders.admin.>"]},
                   "subscribe": {"allow": ["orders.>", "_INBOX.>"]}}}


def policy(**changes: Any) -> dict[str, Any]:
    return {**WRITER, **changes}


@pytest.mark.parametrize(("doc", "message"), [
    (policy(match={"hosts": ["api.example.com"]}), "'match' and 'nats' are both given"),
    (policy(nats={"publish": {"allow": ["orders..created"]}}), "'nats.publish.allow[0]'"),
    (policy(nats={"publish": {"allow": [">.orders"]}}), "'>' before the last token"),
    (policy(nats={"subscribe": {"deny": ["ord*rs"]}}), "'nats.subscribe.deny[0]'"),
    (policy(nats={"subscribe": {"allow": ["orders created"]}}), "whitespace"),
    (policy(nats={"subscribe": {"allow": [""]}}), "is empty"),
    (policy(mode="dry-run"), "'mode' is dry-run"),
    (policy(require={"authenticated": False}), "'require.authenticated' is false"),
    (policy(require={"stepup": {"max_age": 60}}), "never reaches NATS"),
    (policy(headers={"x-team": "orders"}), "'headers' do not apply"),
    (policy(nats={"publish": {"allw": ["x"]}}), "allw"),
])
def test_a_nats_policy_that_cannot_mean_one_thing_is_refused(doc: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(doc)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_the_stored_form_of_a_nats_policy_has_no_match_and_reads_back_the_same() -> None:
    p = parse_policy(WRITER)
    assert "match" not in p.document
    assert p.document["nats"]["publish"] == {"allow": ["orders.>"], "deny": ["orders.admin.>"]}
    assert parse_policy(dict(p.document)) == p
    http = parse_policy({"id": "api", "match": {"hosts": ["api.example.com"]}})
    assert "nats" not in http.document


def test_the_example_policies_are_valid() -> None:
    docs = list(yaml.safe_load_all((EXAMPLE / "policies.yaml").read_text()))
    assert [p.id for p in parse_policies(docs)] == ["orders-writer", "orders-reader"]


def test_nats_policies_are_kept_out_of_the_http_index_and_vice_versa() -> None:
    index = PolicyIndex(parse_policies([
        WRITER, {"id": "zz-nats", "priority": 5, "nats": {}},
        {"id": "everything", "require": {"authenticated": True}}]))
    assert [p.id for p in index.nats] == ["zz-nats", "orders-writer"]  # priority, then id
    assert set(index.by_id) == {"everything"}
    assert len(index) == 3
    view = RequestView("GET", "https", "api.example.com", "/", "", {}, {}, "", "")
    found = index.lookup(view).match
    assert found is not None
    assert found.policy.id == "everything"
    with pytest.raises(KeyError):  # a route cannot bind a NATS policy
        index.lookup(view._replace(context_extensions={"policy": "orders-writer"}))


def identity(**changes: Any) -> Identity:
    values: dict[str, Any] = dict(
        issuer="https://idp", subject="alice", username="alice", email=None,
        audiences=("my-api",), groups=("orders",), scopes=(), client_id=None, acr=None,
        auth_time=None, jti=None, issued_at=None, expires_at=time.time() + 60,
        claims={"groups": ["orders"]})
    values.update(changes)
    return Identity(**values)


def test_the_first_nats_policy_met_decides_and_none_met_refuses() -> None:
    index = PolicyIndex(parse_policies([
        WRITER,
        {"id": "banned", "priority": 10, "action": "deny",
         "require": {"claims": {"banned": [True]}}, "nats": {}},
        {"id": "human", "priority": 20, "nats": {"subscribe": {"allow": ["_INBOX.>"]}},
         "require": {"stepup": {"max_age": 300, "acr_values": ["phr"]}}}]))
    now = time.time()
    assert decide(index.nats, identity(), now).policy.id == "orders-writer"  # type: ignore[union-attr]
    banned = decide(index.nats, identity(claims={"groups": ["orders"], "banned": True}), now)
    assert (banned.allowed, banned.reason) == (False, "policy_denied")
    nobody = decide(index.nats, identity(claims={"groups": []}), now)
    assert (nobody.allowed, nobody.reason, nobody.policy) == (False, "no_policy", None)
    # require.stepup is met by the token's acr and auth_time (RFC 9470)
    recent = identity(acr="phr", auth_time=int(now) - 60)
    assert decide(index.nats, recent, now).policy.id == "human"  # type: ignore[union-attr]
    for stale in (identity(acr="phr", auth_time=int(now) - 600), identity(acr="pwd",
                                                                         auth_time=int(now))):
        assert decide(index.nats, stale, now).policy.id == "orders-writer"  # type: ignore[union-attr]


def _request() -> AuthRequest:
    from extauthz.nats.nkey import SigningPair

    return AuthRequest(server_id=SigningPair.generate(Kind.SERVER).public, server_name="n1",
                       user_nkey=SigningPair.generate(Kind.USER).public, client_host="10.0.0.7",
                       client_id=42, client_kind="Client", auth_token="t", user=None,
                       password=None, client_name="app", expires=0)


def test_the_answer_carries_a_user_jwt_for_the_one_time_key_named_after_the_user() -> None:
    request, issuer = _request(), example_issuer()
    reader = parse_policy({"id": "reader", "nats": {"subscribe": {"allow": ["orders.>"]}}})
    assert reader.nats is not None
    answer = natsjwt.decode(allow(request, issuer, reader.nats, account="APP", name="alice",
                                  expires=2_000_000_000, now=1), Kind.ACCOUNT)
    assert (answer["sub"], answer["aud"]) == (request.user_nkey, request.server_id)
    assert answer["nats"]["type"] == "authorization_response"
    user = natsjwt.decode(answer["nats"]["jwt"], Kind.ACCOUNT)
    assert user["iss"] == issuer.public
    assert (user["sub"], user["aud"], user["name"], user["exp"]) == (
        request.user_nkey, "APP", "alice", 2_000_000_000)
    # NATS reads an empty allow list as "everything": nothing to publish is deny >
    assert user["nats"]["pub"] == {"deny": [">"]}
    assert user["nats"]["sub"] == {"allow": ["orders.>"]}


def test_a_nats_decision_is_audited_with_transport_nats_the_server_and_the_client() -> None:
    request = _request()
    decision = Decision(allowed=True, status=200, reason="allowed", description="allowed",
                        decision_id="d-1", identity=identity(), policy_id="orders-writer")
    record = audit_record(decision, request_view(request), time.time())
    assert record["transport"] == "nats"
    assert (record["host"], record["source"], record["request_id"]) == (
        request.server_id, "10.0.0.7", "n1/42")
    assert (record["subject"], record["policy"], record["decision"]) == (
        "alice", "orders-writer", "allow")
    http = audit_record(decision, RequestView("GET", "https", "h", "/", "", {}, {}, "", ""), 0)
    assert http["transport"] == "envoy"


def test_policy_explain_nats_shows_the_deciding_policy_and_its_permissions(
        idp: LocalIssuer, tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text((EXAMPLE / "policies.yaml").read_text())
    config = tmp_path / "extauthz.yaml"
    config.write_text(yaml.safe_dump({
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{policies}", "state_file": str(tmp_path / "state.json")},
        "nats": {"account": "APP"}}))
    writer = run_cli(config, "policy", "explain", "--nats", "--token",
                     idp.mint(sub="wendy", groups=["orders"]))
    assert writer.returncode == 0, writer.stderr
    assert "orders-writer: MATCHED" in writer.stdout
    assert "orders-reader: met, but orders-writer comes first" in writer.stdout
    assert "decision: ALLOW (allowed): account APP, user 'wendy'" in writer.stdout
    assert "  publish: allow orders.>; deny orders.admin.>" in writer.stdout
    expired = run_cli(config, "policy", "explain", "--nats", "--token",
                      idp.mint(exp=int(time.time()) - 100, iat=int(time.time()) - 600))
    assert expired.returncode == 1
    assert "decision: DENY 401 (token_expired)" in expired.stdout
    no_route = run_cli(config, "policy", "explain", "--host", "h")
    assert no_route.returncode == 2
    assert "--host and --path" in no_route.stderr


def test_the_readme_shows_the_shipped_server_config_and_the_example_config_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    block = readme.split("<!-- nats-server-conf:begin -->\n```\n", 1)[1].split("```\n<!--", 1)[0]
    assert block == (EXAMPLE / "server.conf").read_text()  # what the tests start nats-server with
    monkeypatch.chdir(EXAMPLE.parents[1])  # the example's paths start at the checkout
    from extauthz.config import settings_from_document

    settings = settings_from_document(yaml.safe_load((EXAMPLE / "extauthz.yaml").read_text()))
    assert settings.nats.issuer is not None
    assert settings.nats.issuer.public in block
    assert settings.nats.account == "APP"


def test_policy_list_marks_nats_policies_instead_of_showing_them_on_every_host(
        tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text((EXAMPLE / "policies.yaml").read_text()
                        + "---\nid: api\nmatch: {hosts: [api.example.com]}\n")
    config = tmp_path / "extauthz.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"file://{policies}",
                                                "state_file": str(tmp_path / "state.json")}}))
    listed = run_cli(config, "policy", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1:] for line in listed.stdout.splitlines()[1:]}
    assert rows["orders-writer"][:3] == ["(NATS)", "(NATS)", "(NATS)"]
    assert rows["api"][0] == "api.example.com"
