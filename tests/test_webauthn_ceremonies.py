"""The ceremonies on real payloads captured from Chromium (tests/vectors/), and each failure."""

from __future__ import annotations

import base64
import copy
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from extauthz.stepup.ceremonies import (
    AUTHENTICATE,
    REGISTER,
    ChallengeMissing,
    PasskeyRejected,
    PossibleClone,
    TooManyFailures,
    UnknownPasskey,
)
from extauthz.stepup.store import FileStepupStore, RedisStepupStore, StepupStore, user_key
from tests.support.clock import FakeClock
from tests.support.webauthn import VECTORS, Rig, ident


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    clock = FakeClock()
    return Rig(FileStepupStore(str(tmp_path / "state.json"), clock), clock)


async def test_a_real_registration_verifies_and_is_stored(rig: Rig) -> None:
    await rig.register()
    [passkey] = await rig.store.passkeys(user_key("https://idp.example.com", "alice"))
    assert passkey.credential_id == VECTORS["registration"]["credential"]["id"]
    assert passkey.name == "key"
    assert passkey.last_used is None


async def test_a_real_assertion_verifies_and_updates_the_count_and_last_use(rig: Rig) -> None:
    await rig.register()
    passkey = await rig.authenticate()
    assert passkey.last_used == int(rig.clock.wall())
    [stored] = await rig.store.passkeys(user_key("https://idp.example.com", "alice"))
    assert stored.sign_count == passkey.sign_count


async def test_a_wrong_origin_is_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    rig = Rig(FileStepupStore(str(tmp_path / "s.json"), clock), clock, origins=("https://evil.example",))
    await rig.seed("registration", ident())
    with pytest.raises(PasskeyRejected, match="origin"):
        await rig.ceremonies.register(ident(), VECTORS["registration"]["credential"], "key")


async def test_a_wrong_rp_id_is_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    rig = Rig(FileStepupStore(str(tmp_path / "s.json"), clock), clock, rp_id="example.com")
    await rig.seed("registration", ident())
    with pytest.raises(PasskeyRejected, match="RP ID"):
        await rig.ceremonies.register(ident(), VECTORS["registration"]["credential"], "key")


async def test_a_replayed_assertion_finds_no_challenge(rig: Rig) -> None:
    await rig.register()
    await rig.authenticate()
    with pytest.raises(ChallengeMissing, match="expired or was already used"):
        await rig.authenticate(seed=False)


async def test_an_assertion_for_another_challenge_is_refused(rig: Rig) -> None:
    await rig.register()
    await rig.store.put_challenge(user_key("https://idp.example.com", "alice"), AUTHENTICATE,
                                  {"challenge": base64.urlsafe_b64encode(b"x" * 32).decode()}, 300)
    with pytest.raises(PasskeyRejected, match="challenge"):
        await rig.authenticate(seed=False)


async def test_an_expired_challenge_is_gone(rig: Rig) -> None:
    await rig.register()
    await rig.seed("authentication", ident())
    rig.clock.advance(301)
    with pytest.raises(ChallengeMissing):
        await rig.authenticate(seed=False)


async def test_another_users_key_is_not_registered_for_them(rig: Rig) -> None:
    await rig.register(ident("alice"))
    with pytest.raises(UnknownPasskey, match=r"This key is not registered for bob@example\.com"):
        await rig.authenticate(ident("bob"))


async def test_a_sign_count_that_goes_backwards_is_refused_as_a_possible_clone(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.register()
    user = user_key("https://idp.example.com", "alice")
    [passkey] = await rig.store.passkeys(user)
    from dataclasses import replace

    await rig.store.save_passkey(user, replace(passkey, sign_count=1000))
    with caplog.at_level(logging.ERROR), pytest.raises(PossibleClone):
        await rig.authenticate()
    assert "POSSIBLE CLONED KEY" in caplog.text


async def test_a_tampered_signature_is_refused(rig: Rig) -> None:
    await rig.register()
    cred = copy.deepcopy(VECTORS["authentication"]["credential"])
    sig = bytearray(base64.urlsafe_b64decode(cred["response"]["signature"] + "=="))
    sig[-1] ^= 1
    cred["response"]["signature"] = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    with pytest.raises(PasskeyRejected):
        await rig.authenticate(credential=cred)


async def test_repeated_failures_lock_the_user_out_for_a_while(rig: Rig) -> None:
    await rig.register()
    for _ in range(5):
        with pytest.raises(ChallengeMissing):
            await rig.authenticate(seed=False)
    with pytest.raises(TooManyFailures) as err:
        await rig.authenticate()
    assert err.value.status == 429
    rig.clock.advance(901)
    await rig.authenticate()  # the window passed


async def test_redis_challenges_expire_and_are_taken_once(redis_server: Any) -> None:
    store = RedisStepupStore(redis_server.url, f"c{uuid.uuid4().hex[:6]}:", 2.0)
    await store.put_challenge("u", REGISTER, {"challenge": "abc"}, 300)
    key = next(k for k in redis_server.client().keys("*webauthn:challenge:register:u"))
    assert 0 < redis_server.client().ttl(key) <= 300
    assert await store.take_challenge("u", REGISTER) == {"challenge": "abc"}
    assert await store.take_challenge("u", REGISTER) is None
    await store.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_a_removed_passkey_is_not_written_back_by_a_late_use(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from dataclasses import replace

    from extauthz.stepup.store import Passkey

    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        store: StepupStore = RedisStepupStore(server.url, f"r{uuid.uuid4().hex[:6]}:", 2.0)
    else:
        store = FileStepupStore(str(tmp_path / "s.json"), FakeClock())
    pk = Passkey("c1", "pk", 1, "key", 1, None, (), "https://idp", "alice")
    await store.save_passkey("u", pk)
    assert await store.update_passkey("u", replace(pk, sign_count=2))
    await store.remove_passkey("u", "c1")
    assert not await store.update_passkey("u", replace(pk, sign_count=3))
    assert await store.passkeys("u") == []
    await store.close()
