"""The two WebAuthn ceremonies, with py_webauthn doing the verification.

Security inputs are the configured ``expected_*`` values (RP ID, origins), never taken
from the request. Challenges are random (py_webauthn, 64 bytes), single-use (taken
with GETDEL), bound to the user and the ceremony, and expire after
``stepup.challenge_ttl``. User verification is required. A sign count that goes
backwards for a counter-using authenticator is refused and logged as a possible clone.
Every finishing ceremony is counted per user *before* it is processed (one atomic
increment in the store) and refused above ``max_failures``; a success clears the count.
So past ``max_failures`` failures in ``failure_window`` seconds the user must wait, and
parallel attempts cannot slip past the limit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidCBORData,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from extauthz.clock import Clock
from extauthz.config import StepupSettings
from extauthz.errors import ExtAuthzError
from extauthz.identity.model import Identity
from extauthz.pages import who
from extauthz.stepup.store import Passkey, StepupStore, user_key

log = logging.getLogger("extauthz.stepup")

REGISTER, AUTHENTICATE = "register", "authenticate"


class CeremonyError(ExtAuthzError):
    """A ceremony failed; the message is for the person in front of the browser."""

    code = "ceremony_failed"
    status = 400


class ChallengeMissing(CeremonyError):
    code = "challenge_missing"


class UnknownPasskey(CeremonyError):
    code = "passkey_unknown"


class PasskeyRejected(CeremonyError):
    code = "passkey_rejected"


class PossibleClone(CeremonyError):
    code = "passkey_possible_clone"


class TooManyFailures(CeremonyError):
    code = "too_many_failures"
    status = 429


NAME_LIMIT = 64


def passkey_name(raw: object) -> str:
    """A passkey's name as the user typed it: 1 to 64 printable characters, trimmed.

    Control and other non-printable characters (ESC, CR, LF, bidi overrides, zero-width
    marks) are refused, not stripped: the name reaches the account page and operators'
    terminals (`extauthz webauthn list`), where they could hide or forge text."""
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > NAME_LIMIT:
        raise CeremonyError(f"Give the passkey a name of 1 to {NAME_LIMIT} characters.")
    name = raw.strip()
    if not name.isprintable():
        raise CeremonyError("A passkey name cannot hold control or other invisible characters; "
                            "use letters, digits, spaces and punctuation.")
    return name


def _sign_count(credential: dict[str, Any]) -> int:
    """The sign count in an assertion's authenticatorData (bytes 33-36, big-endian)."""
    try:
        data = base64url_to_bytes(credential["response"]["authenticatorData"])
    except (KeyError, TypeError, ValueError) as e:
        raise PasskeyRejected("The passkey response is incomplete (authenticatorData).") from e
    if len(data) < 37:
        raise PasskeyRejected("The passkey response is incomplete (authenticatorData).")
    return int.from_bytes(data[33:37], "big")


class Ceremonies:
    def __init__(self, settings: StepupSettings, store: StepupStore, clock: Clock) -> None:
        self._s = settings
        self._store = store
        self._clock = clock

    def now(self) -> float:
        return self._clock.wall()

    def _user(self, identity: Identity) -> str:
        return user_key(identity.issuer, identity.subject)

    def _too_many(self) -> TooManyFailures:
        minutes = max(1, self._s.failure_window // 60)
        return TooManyFailures(f"Too many failed attempts. Try again in about {minutes} "
                               "minutes, or ask an administrator.")

    async def _guard(self, user: str) -> None:
        """Before handing out options: a user past the limit gets none (reserves nothing)."""
        if await self._store.failures(user) >= self._s.max_failures:
            raise self._too_many()

    async def _reserve(self, user: str) -> int:
        """Count this attempt before processing it, and refuse it above the limit.

        Increment first, then compare: parallel attempts each get their own number, so no
        more than ``max_failures`` are ever processed per window (reading the counter and
        incrementing it after a failure let every parallel attempt pass the read). A
        success clears the counter, so only failures accumulate."""
        count = await self._store.add_failure(user, self._s.failure_window)
        if count > self._s.max_failures:
            raise self._too_many()
        return count

    def _failed(self, attempt: int, identity: Identity, error: CeremonyError) -> CeremonyError:
        log.warning("stepup: ceremony failed for %r (%s), failure %d of %d", identity.subject,
                    error.code, attempt, self._s.max_failures)
        return error

    async def registration_options(self, identity: Identity) -> str:
        user = self._user(identity)
        await self._guard(user)
        existing = await self._store.passkeys(user)
        options = generate_registration_options(
            rp_id=self._s.rp_id, rp_name=self._s.rp_name, user_name=who(identity),
            user_id=hashlib.sha256(f"{identity.issuer}\n{identity.subject}".encode()).digest(),
            user_display_name=who(identity),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                                 for p in existing],
            timeout=self._s.challenge_ttl * 1000,
        )
        await self._store.put_challenge(user, REGISTER, {"challenge": bytes_to_base64url(
            options.challenge)}, self._s.challenge_ttl)
        return options_to_json(options)

    async def register(self, identity: Identity, credential: dict[str, Any], name: str, *,
                       before_save: Callable[[], Awaitable[None]] | None = None) -> Passkey:
        """Verify a new passkey and store it. ``before_save`` runs once the passkey is known
        good and before it is stored (it may refuse by raising a CeremonyError): a one-time
        allowance is used up only by a registration that succeeds."""
        user = self._user(identity)
        attempt = await self._reserve(user)
        stored = await self._store.take_challenge(user, REGISTER)
        if stored is None:
            raise self._failed(attempt, identity, ChallengeMissing(
                "This enrolment expired or was already used. Start again."))
        try:
            verified = verify_registration_response(
                credential=credential, expected_challenge=base64url_to_bytes(stored["challenge"]),
                expected_rp_id=self._s.rp_id, expected_origin=list(self._s.origins),
                require_user_verification=True)
        except (InvalidRegistrationResponse, InvalidJSONStructure, InvalidCBORData, KeyError,
                TypeError, ValueError) as e:
            raise self._failed(attempt, identity, PasskeyRejected(
                f"The new passkey could not be verified: {e}")) from e
        transports = credential.get("response", {}).get("transports") or []
        passkey = Passkey(
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count, name=name, created=int(self._clock.wall()),
            last_used=None, transports=tuple(t for t in transports if isinstance(t, str)),
            issuer=identity.issuer, subject=identity.subject)
        if before_save is not None:
            await before_save()
        await self._store.save_passkey(user, passkey)
        await self._store.clear_failures(user)
        log.info("stepup: %r enrolled passkey %r", identity.subject, name)
        return passkey

    async def authentication_options(self, identity: Identity) -> str | None:
        """Request options for the user's passkeys; None when the user has none yet."""
        user = self._user(identity)
        await self._guard(user)
        passkeys = await self._store.passkeys(user)
        if not passkeys:
            return None
        options = generate_authentication_options(
            rp_id=self._s.rp_id, timeout=self._s.challenge_ttl * 1000,
            allow_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                               for p in passkeys],
            user_verification=UserVerificationRequirement.REQUIRED)
        await self._store.put_challenge(user, AUTHENTICATE, {"challenge": bytes_to_base64url(
            options.challenge)}, self._s.challenge_ttl)
        return options_to_json(options)

    async def authenticate(self, identity: Identity, credential: dict[str, Any]) -> Passkey:
        user = self._user(identity)
        attempt = await self._reserve(user)
        stored = await self._store.take_challenge(user, AUTHENTICATE)
        if stored is None:
            raise self._failed(attempt, identity, ChallengeMissing(
                "This sign-in expired or was already used. Start again."))
        cid = credential.get("id") if isinstance(credential, dict) else None
        passkey = next((p for p in await self._store.passkeys(user) if p.credential_id == cid), None)
        if passkey is None:
            raise self._failed(attempt, identity, UnknownPasskey(
                f"This key is not registered for {who(identity)}."))
        _sign_count(credential)  # a clear message for a truncated authenticatorData
        try:
            # The count is compared below, only once the signature is known good (py_webauthn
            # compares it first, so forged authenticator data could raise false clone alarms).
            verified = verify_authentication_response(
                credential=credential, expected_challenge=base64url_to_bytes(stored["challenge"]),
                expected_rp_id=self._s.rp_id, expected_origin=list(self._s.origins),
                credential_public_key=base64url_to_bytes(passkey.public_key),
                credential_current_sign_count=0, require_user_verification=True)
        except (InvalidAuthenticationResponse, InvalidJSONStructure, InvalidCBORData, KeyError,
                TypeError, ValueError) as e:
            raise self._failed(attempt, identity, PasskeyRejected(
                f"The passkey could not be verified: {e}")) from e
        new_count = verified.new_sign_count
        if (new_count or passkey.sign_count) and new_count <= passkey.sign_count:
            log.error("stepup: POSSIBLE CLONED KEY: passkey %r of %r reported sign count %d, "
                      "stored %d; assertion refused", passkey.name, identity.subject, new_count,
                      passkey.sign_count)
            raise self._failed(attempt, identity, PossibleClone(
                "This key reported an older use count than before and may have been copied. "
                "It was refused; ask an administrator."))
        updated = replace(passkey, sign_count=new_count, last_used=int(self._clock.wall()))
        if not await self._store.update_passkey(user, updated):  # removed meanwhile: stays removed
            raise self._failed(attempt, identity, UnknownPasskey(
                f"This key is not registered for {who(identity)}."))
        await self._store.clear_failures(user)
        return updated
