"""Capture a real registration and assertion from Chromium's virtual authenticator.

    .venv/bin/python -m tests.vectors.capture_webauthn   # rewrites tests/vectors/webauthn-chromium.json

It runs the real stack (extauthz, Envoy, a test issuer) and records what the browser
posts to the finish endpoints, with the challenges the server issued. The ceremony
tests replay these payloads offline; re-capture only when the format must change.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Request, expect

from tests.support.browser import chromium, person
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.stack import ExtAuthz, Gateway

OUT = Path(__file__).with_name("webauthn-chromium.json")


def main() -> None:
    work = Path(tempfile.mkdtemp())
    (work / "p.yaml").write_text("id: pay\nmatch: {paths: [{prefix: /pay/}]}\n"
                                 "require: {stepup: {max_age: 300}}\n")
    idp = LocalIssuer()
    service = ExtAuthz(work, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
                              "store": {"url": f"file://{work}/p.yaml"},
                              "token": {"cookie": "session"}, "default_action": "authenticated"})
    gateway = Gateway(work, service)
    base = f"http://localhost:{gateway.port}"
    service.config["http"] = {"public_url": base}
    service.start()
    gateway.start()
    seen: dict[str, Any] = {}

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/finish"):
            kind = "registration" if "register" in request.url else "authentication"
            seen.setdefault(kind, {})["credential"] = json.loads(request.post_data or "{}")["credential"]

    def record_response(response: Any) -> None:
        if response.request.method == "POST" and response.url.endswith("/begin"):
            kind = "registration" if "register" in response.url else "authentication"
            body = response.json()
            if "options" in body:
                seen.setdefault(kind, {})["challenge"] = body["options"]["challenge"]
    try:
        with chromium() as browser:
            p = person(browser, base, {"session": idp.mint("ES256", auth_time=int(time.time()))})
            p.page.on("request", record)
            p.page.on("response", record_response)
            p.page.goto("/.extauthz/webauthn/register?rd=%2Fpay%2Fx")
            p.page.click("#enrol")
            expect(p.page).to_have_url(f"{base}/.extauthz/stepup?rd=%2Fpay%2Fx")
            p.page.click("#stepup")
            expect(p.page).to_have_url(f"{base}/pay/x")
    finally:
        gateway.stop()
        service.stop()
        idp.close()
    seen.update({"origin": base, "rp_id": "localhost",
                 "note": "Chromium virtual authenticator (ctap2, internal, resident key, UV)"})
    OUT.write_text(json.dumps(seen, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
