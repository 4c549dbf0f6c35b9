"""WebAuthn ceremonies on real payloads captured from Chromium (tests/vectors/): the vectors,
the step-up settings they were made for, and a rig that seeds their challenges."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from extauthz.config import StepupSettings
from extauthz.identity.model import Identity
from extauthz.stepup.ceremonies import AUTHENTICATE, REGISTER, Ceremonies
from extauthz.stepup.store import StepupStore, user_key
from tests.support.clock import FakeClock
from tests.support.requests import identity

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "webauthn-chromium.json").read_text())


def ident(sub: str = "alice") -> Identity:
    """A signed-in user, as the ceremonies see one."""
    return identity(sub, email=f"{sub}@example.com", audiences=("api",),
                    expires_at=time.time() + 600)


def stepup_settings(**overrides: Any) -> StepupSettings:
    """Step-up settings for the captured vectors' relying party and origin."""
    base: dict[str, Any] = dict(rp_id=VECTORS["rp_id"], rp_name="t", origins=(VECTORS["origin"],),
                                cookie_name="__Host-s", max_age_limit=3600, signing_key_file=None,
                                challenge_ttl=300, enrol_max_age=300, first_enrolment_max_age=300,
                                max_failures=5,
                                failure_window=900)
    return StepupSettings(**{**base, **overrides})


class Rig:
    """The ceremonies over a store, with the captured vectors' challenges seeded by hand."""

    def __init__(self, store: StepupStore, clock: FakeClock, **overrides: Any) -> None:
        self.store, self.clock = store, clock
        self.ceremonies = Ceremonies(stepup_settings(**overrides), store, clock)

    async def seed(self, kind: str, who: Identity) -> None:
        ceremony = REGISTER if kind == "registration" else AUTHENTICATE
        await self.store.put_challenge(user_key(who.issuer, who.subject), ceremony,
                                       {"challenge": VECTORS[kind]["challenge"]}, 300)

    async def register(self, who: Identity | None = None) -> None:
        who = who or ident()
        await self.seed("registration", who)
        await self.ceremonies.register(who, copy.deepcopy(VECTORS["registration"]["credential"]), "key")

    async def authenticate(self, who: Identity | None = None, credential: dict[str, Any] | None = None,
                           seed: bool = True) -> Any:
        who = who or ident()
        if seed:
            await self.seed("authentication", who)
        cred = credential or copy.deepcopy(VECTORS["authentication"]["credential"])
        return await self.ceremonies.authenticate(who, cred)
