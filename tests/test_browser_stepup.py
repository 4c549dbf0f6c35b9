"""WebAuthn step-up in a real Chromium, through Envoy: enrol, assert, come back with 200."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import add_authenticator, chromium, enrol, person
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.stack import ExtAuthz, Gateway, http_get

pytestmark = pytest.mark.e2e

POLICIES = """\
id: payments
match: {paths: [{prefix: /payments/}]}
require:
  stepup: {max_age: 300}
---
id: quick
match: {paths: [{prefix: /quick/}]}
require:
  stepup: {max_age: 3}
---
id: idp-mfa-ok
match: {paths: [{prefix: /mfa/}]}
require:
  stepup: {max_age: 300, acr_values: ["urn:extauthz:webauthn", "phr"]}
"""


@dataclass
class Site:
    gateway: Gateway
    idp: LocalIssuer
    base: str  # http://localhost:PORT: the RP ID must be "localhost"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("browser")
    (work / "policies.yaml").write_text(POLICIES)
    idp = LocalIssuer()
    service = ExtAuthz(work, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{work}/policies.yaml"},
        "token": {"cookie": "session"},
        "default_action": "authenticated",
    })
    gateway = Gateway(work, service)
    service.config["http"] = {"public_url": f"http://localhost:{gateway.port}"}
    service.start()
    gateway.start()
    yield Site(gateway, idp, f"http://localhost:{gateway.port}")
    gateway.stop()
    service.stop()
    idp.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def fresh_token(site: Site, **claims: Any) -> str:
    """A token from a sign-in that just happened: its auth_time lets a first passkey be added."""
    return site.idp.mint("ES256", auth_time=int(time.time()), **claims)


def echo(page_text: str) -> dict[str, str]:
    return dict(json.loads(page_text)["headers"])


def test_enrol_then_step_up_and_land_back_on_the_page(site: Site, browser: Browser) -> None:
    alice = person(browser, site.base, {"session": fresh_token(site)})
    page = alice.page
    page.goto("/payments/send?amount=5")
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2Fpayments%2Fsend%3Famount%3D5")

    expect(page.locator("h1")).to_have_text("Add a passkey to continue")  # no passkey yet
    page.click("#enroll-link")
    expect(page).to_have_url(f"{site.base}/.extauthz/webauthn/register?rd=%2Fpayments%2Fsend%3Famount%3D5")
    page.fill("#name", "laptop")
    page.click("#enrol")

    expect(page.locator("#done")).to_contain_text("Passkey \u201claptop\u201d added.")
    assert len(alice.credentials()) == 1
    page.click("#continue-link")  # adding it confirmed it: no second prompt
    expect(page).to_have_url(f"{site.base}/payments/send?amount=5")
    seen = echo(page.locator("body").inner_text())
    assert seen["x-auth-acr"] == "urn:extauthz:webauthn"
    assert abs(int(seen["x-auth-auth-time"]) - time.time()) < 60
    assert seen["x-auth-policy"] == "payments"

    cookie = next(c for c in alice.context.cookies() if c["name"] == "__Host-extauthz-stepup")
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True, True, "Lax", "/")

    page.goto("/payments/history")  # within max_age: straight through
    assert echo(page.locator("body").inner_text())["x-auth-policy"] == "payments"

    page.goto("/.extauthz/account")
    expect(page.locator("#passkeys li")).to_have_count(1)
    expect(page.locator("#passkeys li .name")).to_have_text("laptop")
    alice.context.close()


def test_after_max_age_the_same_route_asks_again(site: Site, browser: Browser) -> None:
    bob = person(browser, site.base, {"session": fresh_token(site, sub="bob",
                                                             email="bob@example.com")})
    page = bob.page
    enrol(page)
    bob.context.clear_cookies(name="__Host-extauthz-stepup")  # adding the passkey confirmed it
    page.goto("/quick/a")
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2Fquick%2Fa")
    page.click("#stepup")
    expect(page).to_have_url(f"{site.base}/quick/a")
    time.sleep(4.2)  # quick's max_age is 3 s
    page.goto("/quick/a")
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2Fquick%2Fa")
    bob.context.close()


def test_a_second_users_cookie_does_not_satisfy_the_first_users_token(
    site: Site, browser: Browser
) -> None:
    carol_token = fresh_token(site, sub="carol", email="carol@example.com")
    carol = person(browser, site.base, {"session": carol_token})
    carol.page.goto("/.extauthz/webauthn/register?rd=%2Fpayments%2Fx")
    carol.page.click("#enrol")
    carol.page.click("#continue-link")
    expect(carol.page).to_have_url(f"{site.base}/payments/x")
    stepup = next(c["value"] for c in carol.context.cookies() if c["name"] == "__Host-extauthz-stepup")
    carol.context.close()

    alice_token = site.idp.mint("ES256")
    r = http_get(site.gateway.url + "/payments/x", {
        "authorization": f"Bearer {alice_token}", "cookie": f"__Host-extauthz-stepup={stepup}"})
    assert r.status == 401
    assert "insufficient_user_authentication" in r.headers["www-authenticate"]
    r = http_get(site.gateway.url + "/payments/x", {
        "authorization": f"Bearer {carol_token}", "cookie": f"__Host-extauthz-stepup={stepup}"})
    assert r.status == 200


def test_a_passkey_removed_on_the_account_page_is_gone(site: Site, browser: Browser) -> None:
    dave = person(browser, site.base, {"session": fresh_token(site, sub="dave")})
    page = dave.page
    enrol(page)
    page.goto("/payments/x")  # adding the passkey confirmed dave: it lets him in...
    expect(page).to_have_url(f"{site.base}/payments/x")
    page.goto("/.extauthz/account")
    expect(page.locator("#passkeys li")).to_have_count(1)
    page.click("button.remove")
    page.click("#remove-confirm")
    expect(page.locator("#passkeys li")).to_have_count(0)

    def let_in() -> bool:
        page.goto("/payments/x")
        return page.url == f"{site.base}/payments/x"

    # ...and removing the passkey ends it, within a second (the state file is polled every
    # store.poll_interval)
    until(lambda: not let_in(), 2.5, 0.1)
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2Fpayments%2Fx")
    expect(page.locator("#enroll-link")).to_have_text("Add a passkey")  # none left
    dave.context.close()


def test_a_second_passkey_needs_a_fresh_confirmation_with_the_first(site: Site, browser: Browser) -> None:
    frank = person(browser, site.base, {"session": fresh_token(site, sub="frank")})
    page = frank.page
    enrol(page)
    frank.context.clear_cookies(name="__Host-extauthz-stepup")  # the thief has the token only
    frank.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": frank.authenticator_id})
    second = add_authenticator(frank.cdp, transport="usb")
    page.goto("/.extauthz/webauthn/register")  # a thief with frank's token and their own key
    page.click("#enrol")
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2F.extauthz%2Fwebauthn%2Fregister")
    page.click("#stepup")  # the thief's key holds none of frank's passkeys: no assertion at all
    expect(page.locator("#message")).to_contain_text(
        "No passkey was used: the prompt was cancelled or timed out", timeout=10000)
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2F.extauthz%2Fwebauthn%2Fregister")
    result = frank.cdp.send("WebAuthn.getCredentials", {"authenticatorId": second})
    assert result["credentials"] == []
    frank.context.close()


def test_api_clients_get_the_rfc9470_challenge(site: Site) -> None:
    r = http_get(site.gateway.url + "/payments/x", {"authorization": f"Bearer {site.idp.mint('RS256')}"})
    assert r.status == 401
    assert r.headers["www-authenticate"] == (
        'Bearer realm="extauthz", error="insufficient_user_authentication", '
        'error_description="a recent '
        'hardware-backed sign-in (WebAuthn step-up) is required", '
        'acr_values="urn:extauthz:webauthn", max_age="300"')
    assert r.json() == {"error": "insufficient_user_authentication",
                        "error_description": "a recent hardware-backed sign-in (WebAuthn step-up) "
                                             "is required",
                        "acr_values": "urn:extauthz:webauthn", "max_age": 300}


def test_a_token_whose_acr_and_auth_time_satisfy_the_policy_passes_without_a_cookie(site: Site) -> None:
    now = int(time.time())
    fresh = site.idp.mint("RS256", acr="phr", auth_time=now - 10)
    r = http_get(site.gateway.url + "/mfa/x", {"authorization": f"Bearer {fresh}"})
    assert r.status == 200
    assert r.json()["headers"]["x-auth-acr"] == "phr"
    stale = site.idp.mint("RS256", acr="phr", auth_time=now - 1000)
    assert http_get(site.gateway.url + "/mfa/x", {"authorization": f"Bearer {stale}"}).status == 401
    other_acr = site.idp.mint("RS256", acr="pwd", auth_time=now)
    assert http_get(site.gateway.url + "/mfa/x", {"authorization": f"Bearer {other_acr}"}).status == 401
    # phr is not in the payments policy's acr_values: only the WebAuthn cookie satisfies it there
    assert http_get(site.gateway.url + "/payments/x", {"authorization": f"Bearer {fresh}"}).status == 401


def test_a_browser_navigation_is_redirected_with_the_original_path(site: Site) -> None:
    r = http_get(site.gateway.url + "/payments/x?y=1", {
        "authorization": f"Bearer {site.idp.mint('RS256')}", "accept": "text/html"})
    assert r.status == 302
    assert r.headers["location"] == "/.extauthz/stepup?rd=%2Fpayments%2Fx%3Fy%3D1"


def test_the_pages_need_a_signed_in_user(site: Site) -> None:
    r = http_get(site.gateway.url + "/.extauthz/stepup?rd=/x")
    assert r.status == 401
    assert b"You are not signed in" in r.body
    assert "script-src 'self'" in r.headers["content-security-policy"]


def test_screenshot_of_the_stepup_page(site: Site, browser: Browser, tmp_path: Path) -> None:
    p = person(browser, site.base, {"session": site.idp.mint("ES256", sub="erin")})
    p.page.goto("/.extauthz/stepup?rd=%2Fpayments%2Fx")
    expect(p.page.locator("h1")).to_have_text("Add a passkey to continue")  # erin has none
    p.page.screenshot(path=str(tmp_path / "stepup.png"))
    assert (tmp_path / "stepup.png").stat().st_size > 1000
    p.context.close()


def test_a_stale_sign_in_is_told_to_sign_in_again_and_an_operator_allowance_lets_a_first_passkey_in(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    import yaml

    stale = site.idp.mint("ES256", sub="gail", email="gail@example.com",
                          auth_time=int(time.time()) - 3600)
    gail = person(browser, site.base, {"session": stale})
    page = gail.page
    page.goto("/.extauthz/webauthn/register?rd=%2Fpayments%2Fx")
    expect(page.locator("h1")).to_have_text("Sign in again")
    expect(page.locator("main")).to_contain_text(
        "To add your first passkey, your sign-in must be less than 5 minutes old.")
    assert page.locator("#enrol").count() == 0
    page.screenshot(path=str(tmp_path / "sign-in-again.png"))

    service = site.gateway.extauthz
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({
        "issuers": [{"issuer": site.idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"state_file": str(service.workdir / f"state-{service.grpc_port}.json")}}))
    granted = run_cli(config, "webauthn", "allow-enrolment", "--user", "gail")
    assert granted.returncode == 0, granted.stderr

    page.reload()
    page.fill("#name", "work laptop")
    page.click("#enrol")
    expect(page.locator("#continue")).to_be_visible()
    gail.context.clear_cookies(name="__Host-extauthz-stepup")
    page.goto("/.extauthz/stepup?rd=%2Fpayments%2Fx")
    expect(page.locator("#added")).to_contain_text("Your newest passkey, \u201cwork laptop\u201d, "
                                                   "was added on ")
    page.screenshot(path=str(tmp_path / "stepup-added.png"))
    page.click("#stepup")
    expect(page).to_have_url(f"{site.base}/payments/x")

    other = person(browser, site.base, {"session": site.idp.mint("ES256", sub="gail",
                                                                 auth_time=int(time.time()) - 3600)})
    removed = run_cli(config, "webauthn", "remove", "--subject", "gail", "--all")
    assert removed.returncode == 0, removed.stderr
    other.page.goto("/.extauthz/webauthn/register")  # the allowance was used up
    expect(other.page.locator("h1")).to_have_text("Sign in again")
    gail.context.close()
    other.context.close()
