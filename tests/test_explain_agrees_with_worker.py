"""`extauthz policy explain` answers what a running worker answers: both ask one engine.

A real `extauthz serve` process (Redis or the file store) and the CLI, given the same
config, policies, revocations and step-up cookie key, are asked the same requests; their
decisions (allow or deny, status, reason code, the headers each would send) are equal.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse

from extauthz.clock import SYSTEM_CLOCK
from extauthz.stepup.cookie import StepupCookies, load_signing_key, new_signing_key_pem
from extauthz.stepup.store import open_stepup_store
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.requests import CHECK, STEPUP_COOKIE, check_request, identity
from tests.support.stack import ExtAuthz

HOST = "api.example.com"  # check_request's host
POLICIES = """\
id: admin
match: {paths: [{prefix: /admin/}]}
require: {scopes: [admin:write]}
---
id: admin-users-trial
match: {paths: [{prefix: /admin/users/}]}
mode: dry-run
require: {claims: {groups: [sre]}}
---
id: pay
match: {paths: [{prefix: /pay/}]}
require: {stepup: {max_age: 300}}
---
id: docs
match: {paths: [{prefix: /docs/}]}
require: {authenticated: false}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int
    reason: str | None  # on the wire for denials only
    headers: tuple[tuple[str, str], ...]  # to the upstream (allow) or the client (deny)


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    headers: dict[str, str]
    method: str = "GET"


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(config, *args)


def _explained(config: Path, case: Case) -> tuple[Verdict, str]:
    args = ["policy", "explain", "--host", HOST, "--method", case.method, "--path", case.path]
    for key, value in case.headers.items():
        args += ["--header", f"{key}={value}"]
    result = _cli(config, *args)
    assert result.returncode in (0, 1), result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("decision: ")]
    verdict, _, rest = line.removeprefix("decision: ").partition(" (")
    reason = rest.partition(")")[0]
    allowed = verdict == "ALLOW"
    prefix = "  upstream header " if allowed else "  response header "
    headers = tuple(tuple(x.removeprefix(prefix).split(": ", 1)) for x in result.stdout.splitlines()
                    if x.startswith(prefix))
    return Verdict(allowed, 200 if allowed else int(verdict.split()[1]),
                   None if allowed else reason, headers), result.stdout  # type: ignore[arg-type]


def _checked(worker: ExtAuthz, case: Case) -> Verdict:
    with grpc.insecure_channel(f"127.0.0.1:{worker.grpc_port}") as channel:
        raw = channel.unary_unary(CHECK)(check_request(case.headers, case.path, case.method),
                                         timeout=10)
    resp = CheckResponse.parse(raw)
    if resp.status.code == 0:
        return Verdict(True, 200, None, tuple(
            (h.header.key, h.header.value) for h in resp.ok_response.headers
            if h.header.key != "x-auth-decision-id"))
    denied = resp.denied_response
    return Verdict(False, int(denied.status.code), resp.status.message,
                   tuple((h.header.key, h.header.value) for h in denied.headers))


def _stepup_key(store: dict[str, Any]) -> StepupCookies:
    """The store's step-up cookie key (created now, as the first worker would)."""
    async def load() -> bytes:
        s = open_stepup_store(store.get("url"), store.get("prefix", "extauthz:"), 2.0,
                              store["state_file"], SYSTEM_CLOCK)
        try:
            return await s.signing_key(new_signing_key_pem)
        finally:
            await s.close()
    return StepupCookies(load_signing_key(asyncio.run(load()), "store"), 3600, SYSTEM_CLOCK)


@pytest.fixture(params=["redis", "file"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, idp: LocalIssuer
          ) -> Iterator[tuple[Path, ExtAuthz, StepupCookies]]:
    store: dict[str, Any] = {"state_file": str(tmp_path / "state.json")}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        store |= {"url": server.url, "prefix": f"agree{tmp_path.name[-6:]}:",
                  "snapshot_file": str(tmp_path / "floor.json")}
    else:
        store["url"] = f"file://{tmp_path}/policies.yaml"
    doc = {"store": store, "default_action": "deny", "login_url": "https://login.example/?rd={rd}",
           "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}]}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    policies = tmp_path / "in.yaml"
    policies.write_text(POLICIES)
    if request.param == "file":  # the file is the source of truth: `apply` refuses to write it
        (tmp_path / "policies.yaml").write_text(POLICIES)
    else:
        assert _cli(config, "policy", "apply", "-f", str(policies)).returncode == 0
    cookies = _stepup_key(store)
    worker = ExtAuthz(tmp_path, doc)
    yield config, worker, cookies
    worker.stop()


def test_explain_and_a_running_worker_decide_every_case_alike(
    setup: tuple[Path, ExtAuthz, StepupCookies], idp: LocalIssuer
) -> None:
    config, worker, cookies = setup
    before = int(time.time()) - 60
    revoked = idp.mint("ES256", sub="bob", jti="revoked-1", scope="admin:write")
    assert _cli(config, "revoke", "token", "--token", revoked).returncode == 0
    assert _cli(config, "revoke", "subject", "--subject", "mallory").returncode == 0
    worker.start()  # after the revocations: the worker loads them as explain does

    admin = idp.mint("ES256", scope="admin:write")
    reader = idp.mint("ES256", scope="read")
    carol = idp.mint("ES256", sub="carol")
    cookie = cookies.mint(identity("carol", issuer=idp.issuer), "cred-1")
    bearer = {"authorization": f"Bearer {admin}"}
    carol_bearer = {"authorization": f"Bearer {carol}"}
    cases = [
        Case("a public path, no token", "/docs/a", {}),
        Case("no token where one is needed", "/admin/x", {}),
        Case("a browser without a token goes to sign in", "/admin/x", {"accept": "text/html"}),
        Case("a token with the scope", "/admin/x", bearer),
        Case("a token without the scope", "/admin/x", {"authorization": f"Bearer {reader}"}),
        Case("a revoked token", "/admin/x", {"authorization": f"Bearer {revoked}"}),
        Case("a revoked subject's token", "/admin/x", {"authorization": "Bearer " + idp.mint(
            "ES256", sub="mallory", scope="admin:write", iat=before)}),
        Case("a valid step-up cookie", "/pay/send",
             {**carol_bearer, "cookie": f"theme=dark; {STEPUP_COOKIE}={cookie}"}),
        Case("a missing step-up cookie", "/pay/send", carol_bearer),
        Case("a missing step-up cookie, in a browser", "/pay/send",
             {**carol_bearer, "accept": "text/html"}),
        Case("another user's step-up cookie", "/pay/send",
             {**bearer, "cookie": f"{STEPUP_COOKIE}={cookie}"}),
        Case("the step-up cookie twice", "/pay/send",
             {**carol_bearer, "cookie": f"{STEPUP_COOKIE}={cookie}; {STEPUP_COOKIE}={cookie}"}),
        Case("a dry-run policy that would deny", "/admin/users/1", bearer),
        Case("a dry-run policy, no token", "/admin/users/1", {}),
        Case("an ambiguous path", "/admin%2Fusers", bearer),
        Case("no policy matches", "/other", bearer),
    ]
    seen = {}
    for case in cases:
        explained, out = _explained(config, case)
        checked = _checked(worker, case)
        assert explained == checked, f"{case.name}:\n{out}"
        seen[case.name] = checked
    # The table covers what it says it does.
    assert seen["a revoked token"].reason == seen["a revoked subject's token"].reason == "token_revoked"
    assert seen["a valid step-up cookie"].allowed
    assert ("x-auth-acr", "urn:extauthz:webauthn") in seen["a valid step-up cookie"].headers
    assert ("cookie", "theme=dark") in seen["a valid step-up cookie"].headers
    assert seen["a missing step-up cookie"].reason == "stepup_required"
    assert seen["a missing step-up cookie, in a browser"].status == 302
    assert seen["another user's step-up cookie"].reason == "stepup_required"
    assert seen["the step-up cookie twice"].reason == "credential_ambiguous"
    assert seen["a dry-run policy that would deny"].allowed
    assert seen["a dry-run policy, no token"].reason == "token_missing"
    assert (seen["an ambiguous path"].status, seen["an ambiguous path"].reason) == (400, "bad_request")
    assert seen["no policy matches"].reason == "no_policy"
