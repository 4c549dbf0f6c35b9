"""The demo issuer signs anyone in as anyone: it runs only on this machine unless an operator
opts in, it is never on unnoticed (ERROR logs, /readyz, a metric), and its identities carry
their own prefixes like any issuer's."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from extauthz.config import settings_from_document
from extauthz.server import _remind_unsafe
from tests.support.inproc import ServerThread
from tests.support.ports import free_port
from tests.support.stack import ExtAuthz, Gateway, http_get

UNSAFE_DEMO = "UNSAFE: demo_issuer.enabled is on: anyone who reaches /.extauthz/demo/login"


def _demo_settings(tmp_path: Path, **demo: object) -> dict[str, object]:
    return {"demo_issuer": {"enabled": True, "key_file": str(tmp_path / "demo.pem"), **demo},
            "token": {"cookie": "demo-token"}, "default_action": "authenticated",
            "store": {"state_file": str(tmp_path / "state.json")}}


def test_the_opted_in_demo_issuer_is_an_error_in_the_log_and_a_detail_of_readyz(
    tmp_path: Path,
) -> None:
    cfg = _demo_settings(tmp_path, allow_non_local=True)
    service = ExtAuthz(tmp_path, {**cfg, "http": {"public_url": "https://demo.example.com"}}).start()
    try:
        ready = http_get(f"http://127.0.0.1:{service.admin_port}/readyz")  # details: admin
        assert ready.status == 200
        assert f"; {UNSAFE_DEMO}".encode() in ready.body
        assert b"(allow_non_local: from other machines too)" in ready.body
    finally:
        service.stop()
    assert service.process is not None
    errors = [line for line in service.process.log_path.read_text().splitlines()
              if " ERROR extauthz.server[" in line and UNSAFE_DEMO in line]
    assert errors, "no ERROR line at start"


def test_the_demo_issuer_metric_is_one_while_it_is_on_and_zero_otherwise(tmp_path: Path) -> None:
    def gauge(doc: dict[str, object]) -> float:
        settings = settings_from_document({
            **doc, "grpc": {"listen": f"127.0.0.1:{free_port()}"},
            "http": {"listen": f"127.0.0.1:{free_port()}"}, "check_http": {"listen": None},
            "store": {"state_file": str(tmp_path / f"state-{free_port()}.json")}})
        thread = ServerThread(settings).start()
        try:
            assert thread.engine is not None
            text = thread.engine.shared_metrics.text()
        finally:
            thread.stop()
        [family] = [f for f in text_string_to_metric_families(text)
                    if f.name == "extauthz_demo_issuer_enabled"]
        return sum(s.value for s in family.samples)

    assert gauge(_demo_settings(tmp_path)) == 1
    assert gauge({"default_action": "authenticated"}) == 0


def test_the_unsafe_reminder_repeats(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_remind_unsafe(("demo_issuer.enabled is on",), every=0.05), 0.18)

    with caplog.at_level(logging.ERROR, logger="extauthz.server"):
        asyncio.run(run())
    assert len([r for r in caplog.records if r.message == "UNSAFE: demo_issuer.enabled is on"]) >= 3


@pytest.mark.e2e
def test_a_demo_sign_in_through_the_gateway_carries_the_demo_prefixes(tmp_path: Path) -> None:
    service = ExtAuthz(tmp_path, _demo_settings(tmp_path)).start()
    gateway = Gateway(tmp_path, service).start()
    try:
        login = gateway.get("/.extauthz/demo/login?" + urllib.parse.urlencode(
            {"sub": "root", "groups": "corp:sre,system:masters", "rd": "/hello"}))
        assert login.status == 302
        cookie = login.headers["set-cookie"].split(";", 1)[0]
        r = gateway.get("/hello", {"cookie": cookie})
        assert r.status == 200
        seen = r.json()["headers"]
        assert seen["x-auth-subject"] == "root"
        assert seen["x-auth-username"] == "demo:root@example.com"
        assert seen["x-auth-groups"] == "demo:corp:sre,demo:system:masters"
    finally:
        gateway.stop()
        service.stop()
