"""Who may add a first passkey.

A user who has passkeys adds or removes one only right after confirming with one of them
(``stepup.enrol_max_age``, checked by the pages). The *first* passkey has nothing to
confirm with, and whoever adds it owns the user's step-up from then on: a token alone is
not enough, or anyone holding a copy of it could enrol their own authenticator and lock
the real user out. The first passkey needs either

- a fresh sign-in at the IdP: the token's ``auth_time`` at most
  ``stepup.first_enrolment_max_age`` seconds old (and not in the future beyond
  ``token.leeway``). API clients are told with the RFC 9470 challenge (``max_age``), people
  with a "sign in again" link; or
- an operator's one-time allowance (``extauthz webauthn allow-enrolment``), kept in the
  store with a TTL and used up by the registration that succeeds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from extauthz.config import Settings
from extauthz.identity.model import Identity
from extauthz.stepup.ceremonies import CeremonyError
from extauthz.stepup.store import StepupStore, user_key

SIGNIN, GRANT = "signin", "grant"
REGISTER_PAGE = "/.extauthz/webauthn/register"


class FreshSignInNeeded(CeremonyError):
    """The first passkey needs a recent IdP sign-in (RFC 9470 ``max_age``) or a grant."""

    code = "insufficient_user_authentication"
    status = 401


class GrantUsed(CeremonyError):
    code = "enrolment_grant_used"
    status = 409


def span(seconds: int) -> str:
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"


class FirstEnrolment:
    def __init__(self, settings: Settings, store: StepupStore, now: Callable[[], float]) -> None:
        self._settings = settings
        self._store = store
        self._now = now
        self.max_age = settings.stepup.first_enrolment_max_age

    def fresh(self, identity: Identity) -> bool:
        """The token says the user signed in at the IdP within the window."""
        at = identity.auth_time
        if at is None:
            return False
        age = self._now() - at
        return -self._settings.token.leeway <= age <= self.max_age

    async def allowed_by(self, identity: Identity) -> str | None:
        """SIGNIN or GRANT when this user may add a first passkey now; None otherwise."""
        if self.fresh(identity):
            return SIGNIN
        if await self._store.enrolment_granted(user_key(identity.issuer, identity.subject)):
            return GRANT
        return None

    async def require(self, identity: Identity) -> str:
        allowed = await self.allowed_by(identity)
        if allowed is None:
            raise FreshSignInNeeded(self.refusal)
        return allowed

    def use_grant(self, identity: Identity, allowed: str) -> Callable[[], Awaitable[None]]:
        """Run just before the first passkey is stored: the allowance is used up (one left
        over from a sign-in enrolment too, so it cannot admit another first passkey later).
        Admitted by the allowance, a second registration racing on it is refused."""
        user = user_key(identity.issuer, identity.subject)

        async def take() -> None:
            if not await self._store.take_enrolment_grant(user) and allowed == GRANT:
                raise GrantUsed("The administrator's allowance to add a passkey was already "
                                "used. Sign in again, or ask for a new one.")
        return take

    @property
    def refusal(self) -> str:
        return (f"To add your first passkey, your sign-in must be less than {span(self.max_age)} "
                "old. Sign in again, then add it; or ask an administrator to allow it.")

    @property
    def challenge(self) -> str:
        """``WWW-Authenticate`` for API clients (RFC 9470 §3): sign in again, recently; with
        the ``realm`` of every other challenge."""
        realm = self._settings.realm.replace("\\", "\\\\").replace('"', '\\"')
        return (f'Bearer realm="{realm}", error="insufficient_user_authentication", '
                'error_description="a recent sign-in is required to add a first passkey", '
                f'max_age="{self.max_age}"')

    def signin_url(self, back: str = REGISTER_PAGE) -> str | None:
        """The configured login URL, coming back to ``back`` (a same-site path)."""
        login = self._settings.login_url
        return login.replace("{rd}", quote(back, safe="")) if login else None
