"""The pages a person meets, in a real Chromium through Envoy, at desktop and phone widths:
denials as pages, signing in again when a session ended, the step-up pages (a first passkey,
removing one, a failed ceremony). Screenshots at 1280 and 390 px go to the module's
``screenshots`` directory (under pytest's basetemp); at 390 px nothing overflows."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, Route, expect

from extauthz import pages
from tests.support.browser import Person, add_authenticator, chromium, person
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.stack import ExtAuthz, Gateway, http_get

pytestmark = pytest.mark.e2e

STEPUP_COOKIE = "__Host-extauthz-stepup"
POLICIES = """\
id: signin
description: The sign-in page (stands in for the IdP's)
match: {paths: [{prefix: /signin}]}
require: {authenticated: false}
---
id: payments
description: Payments, right after a confirmation with a passkey
match: {paths: [{prefix: /payments/}]}
require:
  stepup: {max_age: 300}
---
id: payments-admin
description: Payments administrators (group payments-admin)
match: {paths: [{prefix: /admin/}]}
require:
  claims: {groups: [payments-admin]}
"""
WIDTHS = (1280, 390)


@dataclass
class Site:
    gateway: Gateway
    idp: LocalIssuer
    base: str  # http://localhost:PORT: the RP ID must be "localhost"
    shots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("pages")
    (work / "policies.yaml").write_text(POLICIES)
    idp = LocalIssuer()
    service = ExtAuthz(work, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{work}/policies.yaml"},
        "token": {"cookie": "session"},
        "default_action": "authenticated",
        "login_url": "/signin?rd={rd}",
    })
    gateway = Gateway(work, service)
    service.config["http"] = {"public_url": f"http://localhost:{gateway.port}"}
    service.start()
    gateway.start()
    yield Site(gateway, idp, f"http://localhost:{gateway.port}", tmp_path_factory.mktemp("screenshots"))
    gateway.stop()
    service.stop()
    idp.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def fresh(site: Site, sub: str, **claims: Any) -> str:
    """A token from a sign-in that just happened (a first passkey may be added with it)."""
    return site.idp.mint("ES256", sub=sub, email=f"{sub}@example.com", auth_time=int(time.time()),
                         **claims)


def shoot(site: Site, page: Page, name: str) -> None:
    """Screenshots at each width; at the phone's, the page must not scroll sideways. The
    stylesheet must have loaded (the CSP lets it)."""
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        page.screenshot(path=str(site.shots / f"{name}-{width}.png"), full_page=True)
        if width == 390:
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
            for box in page.locator("main button:visible, main a.button:visible").all():
                edge = box.bounding_box()
                assert edge is not None
                assert edge["x"] >= 0
                assert edge["x"] + edge["width"] <= 390, name
    page.set_viewport_size({"width": 1280, "height": 800})


def sign_count(someone: Person) -> int:
    return sum(int(c["signCount"]) for c in someone.credentials())


def drop_stepup(someone: Person) -> None:
    """The step-up cookie goes (as it does when it is older than enrol_max_age)."""
    someone.context.clear_cookies(name=STEPUP_COOKIE)


def enrol(page: Page, name: str = "laptop", rd: str = "") -> None:
    page.goto("/.extauthz/webauthn/register" + (f"?rd={rd}" if rd else ""))
    page.fill("#name", name)
    page.click("#enrol")
    expect(page.locator("#done")).to_contain_text(f"Passkey \u201c{name}\u201d added.")


# --- denials as pages ---------------------------------------------------------------------
def test_a_browser_denied_by_a_policy_sees_who_they_are_and_what_the_page_needs(
    site: Site, browser: Browser
) -> None:
    token = site.idp.mint("ES256", sub="mallory", groups=["dev"],
                          email="<script>alert(1)</script>@example.com")
    mallory = person(browser, site.base, {"session": token})
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:  # an alert() would mean the claim ran as script
        dialogs.append(dialog.message)
        dialog.dismiss()

    mallory.page.on("dialog", on_dialog)
    response = mallory.page.goto("/admin/users")
    assert response is not None
    assert response.status == 403
    assert response.headers["content-security-policy"] == pages.CSP
    page = mallory.page
    expect(page.locator("h1")).to_have_text("You don't have access to this page")
    expect(page.locator(".who")).to_have_text("<script>alert(1)</script>@example.com")  # as text
    expect(page.locator(".needs")).to_have_text("Payments administrators (group payments-admin)")
    expect(page.locator("main")).to_contain_text("If you should have access, ask the owner")
    expect(page.locator("#signin")).to_have_attribute("href", "/signin?rd=%2Fadmin%2Fusers")
    shoot(site, page, "denied-403")
    assert dialogs == []
    assert page.locator("main script").count() == 0
    mallory.context.close()

    api = http_get(site.gateway.url + "/admin/users", {"authorization": f"Bearer {token}"})
    assert (api.status, api.headers["content-type"]) == (403, "application/json")
    assert api.json()["error"] == "forbidden"


def test_an_expired_session_cookie_sends_the_browser_to_sign_in_again(
    site: Site, browser: Browser
) -> None:
    now = int(time.time())
    expired = site.idp.mint("ES256", sub="ed", iat=now - 7200, exp=now - 3600)
    ed = person(browser, site.base, {"session": expired})
    ed.page.goto("/admin/users?tab=2")
    expect(ed.page).to_have_url(f"{site.base}/signin?rd=%2Fadmin%2Fusers%3Ftab%3D2")
    ed.context.close()

    # An API client with the same token, in the cookie or as a Bearer header: 401 invalid_token
    for headers in ({"cookie": f"session={expired}"}, {"authorization": f"Bearer {expired}"}):
        r = http_get(site.gateway.url + "/admin/users", headers)
        assert r.status == 401
        assert r.headers["www-authenticate"] == (
            'Bearer realm="extauthz", error="invalid_token", error_description="token expired"')
        assert r.json() == {"error": "invalid_token", "error_description": "token expired"}


def test_a_session_a_new_sign_in_cannot_fix_gets_a_401_page_not_a_redirect_loop(
    site: Site, browser: Browser
) -> None:
    other = site.idp.mint("ES256", sub="olga", aud="another-app")
    olga = person(browser, site.base, {"session": other})
    response = olga.page.goto("/admin/users")
    assert response is not None
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    expect(olga.page.locator("h1")).to_have_text("Sign in again")
    expect(olga.page.locator("#signin")).to_have_attribute("href", "/signin?rd=%2Fadmin%2Fusers")
    shoot(site, olga.page, "denied-401")
    olga.context.close()


def test_the_503_page_reads_well_on_a_phone(site: Site, browser: Browser) -> None:
    """The engine's 503 page as Envoy would send it (a real 503 needs a broken store)."""
    someone = person(browser, site.base, {})

    def unavailable(route: Route) -> None:
        route.fulfill(status=503, headers={"content-type": pages.HTML_TYPE,
                                           **dict(pages.SECURITY_HEADERS)},
                      body=pages.unavailable_page(details="policies are not loaded yet"))

    someone.page.route(f"{site.base}/reports/", unavailable)
    someone.page.goto("/reports/")
    expect(someone.page.locator("h1")).to_have_text("Try again shortly")
    shoot(site, someone.page, "denied-503")
    someone.context.close()


# --- step-up pages ------------------------------------------------------------------------
def test_a_user_without_a_passkey_is_offered_to_add_one_first_and_is_not_asked_twice(
    site: Site, browser: Browser
) -> None:
    amy = person(browser, site.base, {"session": fresh(site, "amy")})
    page = amy.page
    page.goto("/payments/send?amount=5")
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2Fpayments%2Fsend%3Famount%3D5")
    expect(page.locator("h1")).to_have_text("Add a passkey to continue")
    first = page.locator("main a.button, main button").first
    expect(first).to_have_text("Add a passkey")  # the first action; no "Confirm" to fail
    assert page.locator("#stepup").count() == 0
    shoot(site, page, "stepup-no-passkey")

    first.click()
    expect(page).to_have_url(f"{site.base}/.extauthz/webauthn/register?rd=%2Fpayments%2Fsend%3Famount%3D5")
    shoot(site, page, "register")
    page.fill("#name", "laptop")
    page.click("#enrol")
    expect(page.locator("#done")).to_have_text(
        "Passkey \u201claptop\u201d added. That confirmed it's you too: continue to your page.")
    expect(page.locator("h1")).to_have_text("Passkey added")
    expect(page.locator("#enrol")).to_be_hidden()
    expect(page.locator("#continue-link")).to_have_text("Continue")
    shoot(site, page, "register-added")
    used = sign_count(amy)

    page.click("#continue-link")  # no second prompt: the registration was the confirmation
    expect(page).to_have_url(f"{site.base}/payments/send?amount=5")
    seen = json.loads(page.locator("body").inner_text())["headers"]
    assert seen["x-auth-acr"] == "urn:extauthz:webauthn"
    assert sign_count(amy) == used  # no assertion was asked for
    assert len(amy.credentials()) == 1
    amy.context.close()


def test_removing_a_passkey_asks_to_confirm_says_why_and_completes_after_a_fresh_confirmation(
    site: Site, browser: Browser
) -> None:
    rob = person(browser, site.base, {"session": fresh(site, "rob")})
    page = rob.page
    enrol(page, "old phone")
    drop_stepup(rob)  # long after: the confirmation that came with adding it is too old
    page.goto("/.extauthz/account")
    expect(page.locator("#passkeys li")).to_have_count(1)
    page.click("button.remove")
    panel = page.locator("#confirm-remove")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Remove \u201cold phone\u201d?")
    expect(panel).to_contain_text("needs a confirmation with one of them from the last 5 minutes, "
                                  "so that someone who has only your signed-in session cannot "
                                  "remove them")
    expect(page.locator("#passkeys li")).to_have_count(1)  # nothing removed before the answer
    shoot(site, page, "account-confirm-remove")

    page.click("#remove-confirm")  # the browser asks for a passkey, then the removal completes
    expect(page.locator("#message")).to_have_text(
        "Removed \u201cold phone\u201d. Pages that need a passkey will ask you to confirm again.")
    expect(page.locator("#passkeys li")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    expect(page).to_have_url(f"{site.base}/.extauthz/account")
    assert any(c["name"] == STEPUP_COOKIE for c in rob.context.cookies())  # the fresh confirmation
    shoot(site, page, "account-empty")

    def asked_again() -> bool:  # the removal ends every step-up so far, in every worker
        page.goto("/payments/x")
        return page.url.startswith(f"{site.base}/.extauthz/stepup")

    until(asked_again, 3, 0.1)
    expect(page.locator("h1")).to_have_text("Add a passkey to continue")  # none left: add one
    rob.context.close()


def test_cancelling_a_removal_keeps_the_passkey(site: Site, browser: Browser) -> None:
    cat = person(browser, site.base, {"session": fresh(site, "cat")})
    enrol(cat.page)
    cat.page.goto("/.extauthz/account")
    cat.page.click("button.remove")
    cat.page.click("#remove-cancel")
    expect(cat.page.locator("#confirm-remove")).to_be_hidden()
    cat.page.reload()
    expect(cat.page.locator("#passkeys li")).to_have_count(1)
    cat.context.close()


def test_the_account_page_fits_a_phone_and_reads_naturally(site: Site, browser: Browser) -> None:
    long_name = "WorkLaptopWithAVeryLongNameThatHasNoSpacesOrHyphensAtAll01234567"  # nowhere to wrap
    assert len(long_name) == 64
    una = person(browser, site.base, {"session": fresh(site, "una")})
    page = una.page
    page.goto("/.extauthz/account")
    expect(page.locator("#empty")).to_have_text(
        "You have no passkeys yet. Pages that ask you to confirm it's you need one: add one below.")
    expect(page.locator("#passkeys")).to_be_hidden()
    expect(page.locator("#add")).to_have_text("Add a passkey")

    enrol(page, long_name)
    page.goto("/.extauthz/account")
    expect(page.locator("#passkeys li .name")).to_have_text(long_name)
    dates = page.locator("#passkeys li .when")
    expect(dates).to_have_text(re.compile(r"^Added \w{3} \d{1,2}, \d{4}, \d{1,2}:\d{2}\s?[AP]M"
                                          r" \u00b7 not used yet$"))  # the browser's locale (en-US)
    shoot(site, page, "account")
    page.set_viewport_size({"width": 390, "height": 800})
    remove = page.locator("button.remove").bounding_box()
    assert remove is not None
    assert remove["x"] + remove["width"] <= 390 - 8  # inside the page, with its margin
    una.context.close()


def test_a_failed_confirmation_says_what_to_try_next(site: Site, browser: Browser) -> None:
    fay = person(browser, site.base, {"session": fresh(site, "fay")})
    page = fay.page
    enrol(page)
    drop_stepup(fay)
    fay.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": fay.authenticator_id})
    add_authenticator(fay.cdp, transport="usb")  # a key that holds none of fay's passkeys
    page.goto("/payments/x")
    expect(page.locator("h1")).to_have_text("Confirm it's you")
    shoot(site, page, "stepup")
    page.click("#stepup")
    message = page.locator("#message")
    expect(message).to_have_class("error", timeout=15000)
    expect(message).to_contain_text("or this device holds none of your passkeys")
    expect(message).to_contain_text("use another authenticator that holds one")
    expect(message).to_contain_text("ask an administrator to remove them; then you can add a new one")
    shoot(site, page, "stepup-failed")
    fay.context.close()


def test_changing_passkeys_says_why_a_fresh_confirmation_is_needed(site: Site, browser: Browser) -> None:
    gus = person(browser, site.base, {"session": fresh(site, "gus")})
    page = gus.page
    enrol(page)
    drop_stepup(gus)
    page.goto("/.extauthz/webauthn/register")
    page.click("#enrol")  # a second passkey: confirm with the first one, first
    expect(page).to_have_url(f"{site.base}/.extauthz/stepup?rd=%2F.extauthz%2Fwebauthn%2Fregister")
    expect(page.locator("#why")).to_have_text(
        "Changing your passkeys needs a confirmation with one of them from the last 5 minutes, "
        "so that someone who has only your signed-in session cannot add or remove passkeys.")
    shoot(site, page, "stepup-why")
    page.click("#stepup")
    expect(page).to_have_url(f"{site.base}/.extauthz/webauthn/register")
    gus.context.close()


def test_a_first_passkey_after_a_stale_sign_in_says_to_sign_in_again(site: Site, browser: Browser) -> None:
    stale = site.idp.mint("ES256", sub="sam", email="sam@example.com",
                          auth_time=int(time.time()) - 3600)
    sam = person(browser, site.base, {"session": stale})
    page = sam.page
    page.goto("/payments/x")
    page.click("#enroll-link")
    expect(page.locator("h1")).to_have_text("Sign in again")
    expect(page.locator("#signin")).to_have_attribute(
        "href", "/signin?rd=%2F.extauthz%2Fwebauthn%2Fregister%3Frd%3D%252Fpayments%252Fx")
    shoot(site, page, "register-sign-in-again")
    sam.context.close()


def test_over_the_http_check_transport_a_denial_page_keeps_its_security_headers(
    site: Site, tmp_path: Path
) -> None:
    gateway = Gateway(tmp_path, site.gateway.extauthz, transport="http").start()
    try:
        token = site.idp.mint("ES256", sub="hal", groups=["dev"])
        r = gateway.get("/admin/users", {"cookie": f"session={token}", "accept": "text/html"})
        assert r.status == 403
        assert r.headers["content-type"] == pages.HTML_TYPE
        assert r.headers["content-security-policy"] == pages.CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert b"Payments administrators (group payments-admin)" in r.body
    finally:
        gateway.stop()
