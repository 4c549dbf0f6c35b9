"""A subject (or passkey id) with a newline cannot forge log lines: values from a token or a
client are logged with %r, so one event stays one line."""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from extauthz.identity.model import Identity
from extauthz.stepup.ceremonies import CeremonyError, PossibleClone
from extauthz.stepup.store import FileStepupStore, Passkey, user_key
from tests.support.clock import FakeClock
from tests.support.inproc import ServerThread
from tests.support.issuer import LocalIssuer
from tests.support.requests import STEPUP_COOKIE, bearer
from tests.support.settings import serving_settings
from tests.support.stack import ORIGIN, post_json
from tests.support.webauthn import VECTORS, Rig, ident

FORGED = "mallory\n2030-01-01 00:00:00,000 ERROR extauthz.stepup[1]: FORGED admin login\r"


def one_line_each(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("extauthz")]
    for message in messages:
        assert "\n" not in message, message
        assert "\r" not in message, message
    return messages


async def test_a_subject_with_a_newline_stays_on_one_line_in_every_ceremony_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    rig = Rig(FileStepupStore(str(tmp_path / "s.json"), clock), clock)
    who: Identity = replace(ident(), subject=FORGED)
    with caplog.at_level(logging.INFO, logger="extauthz"):
        await rig.register(who)  # "enrolled passkey"
        with pytest.raises(CeremonyError):  # "ceremony failed"
            await rig.authenticate(who, seed=False)
        user = user_key(who.issuer, who.subject)
        [passkey] = await rig.store.passkeys(user)
        await rig.store.save_passkey(user, replace(passkey, sign_count=10**6))
        with pytest.raises(PossibleClone):  # "POSSIBLE CLONED KEY"
            await rig.authenticate(who, copy.deepcopy(VECTORS["authentication"]["credential"]))
    messages = one_line_each(caplog)
    assert len(messages) == 4, messages
    assert all(repr(FORGED) in m for m in messages)


def test_the_passkey_pages_log_a_client_chosen_passkey_id_with_newlines_on_one_line(
    caplog: pytest.LogCaptureFixture, issuer: LocalIssuer,
) -> None:
    """The verifier refuses a ``sub`` with control characters before the pages see it; a
    passkey id comes from the request body, and is what the page logs."""
    settings = serving_settings(issuer)
    server = ServerThread(settings).start()
    try:
        assert server.engine is not None
        assert server.engine.stepups.cookies is not None
        cid = "c1\nINFO extauthz.stepup: FORGED"
        store = FileStepupStore(settings.store.state_file, FakeClock())
        asyncio.run(store.save_passkey(user_key(issuer.issuer, "mallory"), Passkey(
            cid, "pk", 0, "key", 1, None, (), issuer.issuer, "mallory")))
        token = issuer.mint("ES256", sub="mallory")
        who = replace(ident(), issuer=issuer.issuer, subject="mallory")
        cookie = server.engine.stepups.cookies.mint(who, cid)
        with caplog.at_level(logging.INFO, logger="extauthz.stepup"):
            removed_page = post_json(
                f"http://127.0.0.1:{settings.http_listen[1]}/.extauthz/webauthn/passkeys/remove",
                {"id": cid}, bearer(token, origin=ORIGIN, cookie=f"{STEPUP_COOKIE}={cookie}"))
        assert (removed_page.status, removed_page.json()) == (200, {"removed": cid})
        removed = [m for m in one_line_each(caplog) if "removed passkey" in m]
        assert removed == [f"stepup: 'mallory' removed passkey {cid!r}; step-ups made before now "
                           "are ended"]
    finally:
        server.stop()
