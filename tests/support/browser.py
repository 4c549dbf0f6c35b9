"""Debian's Chromium, driven by Playwright, with a CDP virtual authenticator (a passkey)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@contextmanager
def chromium() -> Iterator[Browser]:
    path = shutil.which("chromium") or CHROMIUM
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Person:
    """One browser profile with its own passkey authenticator."""

    context: BrowserContext
    page: Page
    authenticator_id: str
    cdp: Any

    def credentials(self) -> list[dict[str, Any]]:
        result = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})
        return list(result["credentials"])


def add_authenticator(cdp: Any, transport: str = "internal") -> str:
    """A virtual passkey authenticator that verifies its user without asking; its id."""
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": transport, "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})
    return str(added["authenticatorId"])


def person(browser: Browser, base_url: str, cookies: dict[str, str]) -> Person:
    context = browser.new_context(base_url=base_url)
    context.add_cookies([{"name": k, "value": v, "url": base_url} for k, v in cookies.items()])
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")  # before addVirtualAuthenticator
    return Person(context, page, add_authenticator(cdp), cdp)


def enrol(page: Page) -> None:
    """Add a passkey on the register page, as a signed-in user does."""
    page.goto("/.extauthz/webauthn/register")
    page.click("#enrol")
    expect(page.locator("#done")).to_contain_text("added.")
