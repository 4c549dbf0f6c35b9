"""Is this user stepped up, and where do they go to step up: the one answer to each.

Check (``authorize.py``), the step-up pages (``stepup/http.py``) and ``policy explain`` all
ask ``StepupGate``; the redirect to the ceremony is built by ``stepup_url`` alone. A proof
is either the IdP's own (``acr`` and ``auth_time`` in the token, RFC 9470) or our step-up
cookie for this same user, recent enough and not ended by a ``stepup`` revocation.

The cookie key comes from ``stepup.signing_key_file`` at build time, or from the store
(created once, shared by every replica) by ``keep_loading_key`` in a worker's background
(``load_key`` once, for a command). Until it is loaded no cookie counts, and none is minted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric import ec

from extauthz.clock import Clock
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.identity.extract import cookie_value
from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR, StepupRequirement
from extauthz.revocation.sync import RevocationSnapshot
from extauthz.stepup.cookie import StepupCookies, load_signing_key, new_signing_key_pem
from extauthz.stepup.store import StepupStore

# The key loader runs in a worker: its lines keep the logger name operators know.
log = logging.getLogger("extauthz.server")

BASE = "/.extauthz"  # Envoy routes this prefix to the HTTP side (``stepup/http.py``)
STEPUP_PAGE = f"{BASE}/stepup"


def stepup_url(rd: str) -> str:
    """The ceremony page, coming back to ``rd`` (a same-site path and query) afterwards."""
    return f"{STEPUP_PAGE}?rd={quote(rd, safe='')}"


def signing_key_from_file(path: str) -> ec.EllipticCurvePrivateKey:
    """``stepup.signing_key_file``: a ConfigError naming the key when it cannot be used."""
    try:
        return load_signing_key(Path(path).read_bytes(), path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"config: 'stepup.signing_key_file': {e}") from e


class StepupGate:
    """Mints step-up cookies and says whether a request's user is stepped up."""

    def __init__(self, *, cookie_name: str, lifetime: int, clock: Clock,
                 revocations: RevocationSnapshot | None) -> None:
        self.cookie_name = cookie_name
        self._lifetime = lifetime
        self._clock = clock
        self._revocations = revocations
        self.cookies: StepupCookies | None = None  # once the signing key is loaded

    @property
    def loaded(self) -> bool:
        return self.cookies is not None

    def use_key(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.cookies = StepupCookies(key, self._lifetime, self._clock)

    def mint(self, identity: Identity, credential_id: str) -> str | None:
        """A cookie for a ceremony just passed with this credential; None before the key loads."""
        cookies = self.cookies
        return cookies.mint(identity, credential_id) if cookies is not None else None

    def stepped_up(self, requirement: StepupRequirement, identity: Identity,
                   cookie_header: str | None) -> Identity | None:
        """The identity, with the proof's ``acr`` and ``auth_time``, if a proof at most
        ``requirement.max_age`` old exists; else None. Raises ``CredentialAmbiguous`` (a
        TokenError) when the step-up cookie appears twice: refused, never guessed."""
        now = self._clock.wall()
        if (identity.acr in requirement.acr_values and identity.auth_time is not None
                and now - identity.auth_time <= requirement.max_age):
            return identity
        cookies = self.cookies
        if cookies is None or WEBAUTHN_ACR not in requirement.acr_values:
            return None  # no key loaded yet, or the policy accepts only IdP-asserted ACRs
        value = cookie_value(cookie_header, self.cookie_name)
        proof = cookies.verify(value, identity) if value else None
        if proof is None or now - proof.auth_time > requirement.max_age:
            return None
        revoked = self._revocations.current if self._revocations is not None else None
        if revoked is not None and revoked.stepup_revoked(identity.issuer, identity.subject,
                                                          proof.auth_time):
            return None
        return dataclasses.replace(identity, acr=WEBAUTHN_ACR, auth_time=proof.auth_time)


async def load_key(gate: StepupGate, store: StepupStore) -> None:
    """The key kept in the store (created there if it has none, as every worker would).
    Raises StoreUnavailable, or ValueError for a stored key that is not a P-256 key."""
    pem = await store.signing_key(new_signing_key_pem)
    gate.use_key(load_signing_key(pem, store.description))


async def keep_loading_key(gate: StepupGate, store: StepupStore) -> None:
    """A worker's background task: retry with backoff until the store's key is loaded."""
    delay = 0.2
    while not gate.loaded:
        try:
            await load_key(gate, store)
        except StoreUnavailable as e:
            log.warning("stepup: cannot load the cookie key (%s); retrying", e.message)
        except ValueError as e:
            log.error("stepup: the stored cookie key is unusable (%s); step-up cannot be met "
                      "until it is replaced (set stepup.signing_key_file)", e)
        else:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
