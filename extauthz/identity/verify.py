"""Token verification: a compact JWS checked against the issuer's cached keys.

The signature is checked with PyJWT's algorithm implementations; the claims are
checked here, on the injectable clock, so every failure has its own stable code and
a description that never echoes token contents. Verified tokens are cached (keyed by
a SHA-256 of the token, until ``exp``) so a repeat caller costs no signature check.

What could mean two things is refused, never guessed: JOSE JSON that is not I-JSON (NaN,
duplicate names; ``jose_json``), a time claim that is not a finite time, an ``auth_time`` in
the future, text claims that reach a header with stray whitespace, control characters or the
header's separator, and an IdP token asserting the ACR only our own step-up cookie may carry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from extauthz.cache import BoundedCache
from extauthz.clock import Clock
from extauthz.config import IssuerSettings, Settings
from extauthz.errors import (
    KeysUnavailable,
    TokenAlgorithmRejected,
    TokenAudienceInvalid,
    TokenClaimsInvalid,
    TokenError,
    TokenExpired,
    TokenIssuerUnknown,
    TokenMalformed,
    TokenNotYetValid,
    TokenRevoked,
    TokenSignatureInvalid,
    TokenTooLarge,
)
from extauthz.identity import jose_json
from extauthz.identity.extract import find_token
from extauthz.identity.jwks import KEY_TYPE_FOR_ALG, IssuerKeys
from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR
from extauthz.request import RequestView
from extauthz.revocation.sync import RevocationSnapshot

_DEFAULTS = get_default_algorithms()
_ALGORITHMS: Mapping[str, Algorithm] = {
    **{name: alg for name, alg in _DEFAULTS.items() if name in KEY_TYPE_FOR_ALG},
    "Ed25519": _DEFAULTS["EdDSA"],  # the key check limits it to Ed25519 keys
}
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# A NumericDate we accept: from the epoch to the end of year 9999 (RFC 3339's range).
_LATEST_TIME = 253402300799
# C0 and C1 controls, DEL, the Unicode line and paragraph separators, lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_RESERVED_ACR = WEBAUTHN_ACR.casefold()


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding, as JWS uses (RFC 7515 §2), in its one canonical
    spelling: unused trailing bits set would let two strings carry the same bytes."""
    raw = segment.encode("ascii", "strict") if segment.isascii() else b"!"
    if not raw or not _B64_CHARS.issuperset(raw) or len(raw) % 4 == 1:
        raise TokenMalformed("token is not valid base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as e:
        raise TokenMalformed("token is not valid base64url") from e
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise TokenMalformed("token is not canonical base64url (trailing bits set)")
    return data


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = jose_json.loads(b64url_decode(segment))
    except jose_json.NotIJSON as e:
        raise TokenMalformed(f"token {what} {e.problem}") from e
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise TokenMalformed(f"token {what} is not JSON") from e
    if not isinstance(value, dict):
        raise TokenMalformed(f"token {what} is not a JSON object")
    return value


def _time(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim: a finite number of seconds between 1970 and 9999, or absent.

    The range check comes before any float conversion, so ``10**400`` is a clean refusal
    (not an OverflowError), and NaN (already refused by the parser) could not pass it either.
    """
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenClaimsInvalid(f"token claim '{name}' is not a number")
    if not 0 <= value <= _LATEST_TIME:
        raise TokenClaimsInvalid(f"token claim '{name}' is not a time between 1970 and 9999")
    return float(value)


def _text(value: str, name: str, *, no_comma: bool = False, no_space: bool = False) -> str:
    """A claim value bound for a header: refused if a proxy, the upstream or a log line
    could read it differently from us (``" system:masters"`` arrives as ``system:masters``
    once HTTP trims it). The description names the claim, never its value."""
    if not value:
        raise TokenClaimsInvalid(f"token claim '{name}' has an empty value")
    if _CONTROL.search(value):
        raise TokenClaimsInvalid(f"token claim '{name}' has a control character")
    if value != value.strip():
        raise TokenClaimsInvalid(f"token claim '{name}' has whitespace at either end of a value")
    if no_space and any(c.isspace() for c in value):  # the separator of x-auth-scopes
        raise TokenClaimsInvalid(f"token claim '{name}' has whitespace inside a value")
    if no_comma and "," in value:  # the separator of x-auth-groups
        raise TokenClaimsInvalid(f"token claim '{name}' has a value with a comma")
    return value


def _strings(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenClaimsInvalid(f"token claim '{name}' is not a string or a list of strings")


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _optional_text(claims: Mapping[str, Any], name: str) -> str | None:
    """A string claim for a header; an empty one is the same as none."""
    value = _optional_str(claims, name)
    return _text(value, name) if value else None


def _scope_string(value: str, name: str) -> tuple[str, ...]:
    """``scope-token *( SP scope-token )`` (RFC 6749 §3.3): one space between, none around."""
    if not value:
        return ()
    return tuple(_text(s, name, no_space=True) for s in value.split(" "))


def scopes_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """Scopes from ``scope`` (space-separated, RFC 8693) or ``scp`` (a list, Okta/Azure).

    ``x-auth-scopes`` is space-joined: a scope holding any whitespace is refused."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return _scope_string(scope, "scope")
    scp = claims.get("scp")
    if isinstance(scp, str):
        return _scope_string(scp, "scp")
    return tuple(_text(s, "scp", no_space=True) for s in _strings(scp, "scp"))


def identity_from_claims(claims: Mapping[str, Any], issuer: IssuerSettings) -> Identity:
    """Map verified claims to an Identity, with kube-apiserver username/groups semantics."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenClaimsInvalid("token has no 'sub' claim")
    _text(subject, "sub")
    raw_username = claims.get(issuer.username_claim)
    if not isinstance(raw_username, str) or not raw_username:
        raise TokenClaimsInvalid(f"token lacks the username claim '{issuer.username_claim}'")
    _text(raw_username, issuer.username_claim)
    if issuer.username_claim == "email" and claims.get("email_verified") is False:
        raise TokenClaimsInvalid("token email is not verified ('email_verified' is false)")
    # x-auth-groups is comma-joined: "a,sre" would forge sre, " sre" arrives trimmed as sre.
    groups = tuple(_text(g, issuer.groups_claim, no_comma=True)
                   for g in _strings(claims.get(issuer.groups_claim), issuer.groups_claim))
    email = _optional_text(claims, "email")
    acr = _optional_text(claims, "acr")
    if acr is not None and acr.casefold() == _RESERVED_ACR:
        # Only our step-up cookie carries our ceremony; an IdP asserting it is lying or
        # misconfigured, so the whole token is refused rather than its acr quietly dropped.
        raise TokenClaimsInvalid(
            "token 'acr' is reserved for this service's own WebAuthn step-up; an IdP cannot "
            "assert it")
    auth_time = _time(claims, "auth_time")
    client_id = _optional_str(claims, "azp") or _optional_str(claims, "client_id")
    exp = _time(claims, "exp")
    assert exp is not None  # checked by the caller
    return Identity(
        issuer=issuer.issuer,
        subject=subject,
        username=issuer.username_prefix + raw_username,
        email=email if claims.get("email_verified") is not False else None,
        audiences=_strings(claims.get("aud"), "aud"),
        groups=tuple(issuer.groups_prefix + g for g in groups),
        scopes=scopes_of(claims),
        client_id=client_id,
        acr=acr,
        auth_time=math.floor(auth_time) if auth_time is not None else None,
        jti=_optional_str(claims, "jti"),
        issued_at=_time(claims, "iat"),
        expires_at=exp,
        claims=MappingProxyType(dict(claims)),
    )


class TokenVerifier:
    """Verifies bearer tokens for the configured issuers; caches what it verified."""

    def __init__(self, settings: Settings, keys: Mapping[str, IssuerKeys], clock: Clock,
                 revocations: RevocationSnapshot | None = None) -> None:
        self._revocations = revocations
        self._issuers = {i.issuer: i for i in settings.issuers}
        self._keys = keys
        self._clock = clock
        self._leeway = settings.token.leeway
        self._max_bytes = settings.token.max_bytes
        self._cache: BoundedCache[bytes, Identity] = BoundedCache(settings.token.cache_size, lru=True)
        self.cache_hits = 0
        self.cache_misses = 0

    async def verify(self, token: str) -> Identity:
        """The identity of a valid token; a TokenError (or KeysUnavailable) otherwise."""
        if len(token) > self._max_bytes:
            raise TokenTooLarge(f"token is larger than {self._max_bytes} bytes")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if self._clock.wall() > cached.expires_at + self._leeway:
                self._cache.discard(digest)
                raise TokenExpired("token expired")
            self.cache_hits += 1
            self._cache.touch(digest)
            self._check_revoked(cached)
            return cached
        self.cache_misses += 1
        identity = self._cache.put(digest, await self._verify_uncached(token))
        self._check_revoked(identity)
        return identity

    async def identity_of(self, view: RequestView, cookie: str | None) -> Identity | None:
        """The caller's identity if it presents a valid token (bearer or cookie), else None."""
        try:
            token = find_token(view, cookie)
            return None if token is None else await self.verify(token)
        except (TokenError, KeysUnavailable):
            return None

    def _check_revoked(self, identity: Identity) -> None:
        """Revocations apply to every request, cached token or not (an in-memory lookup)."""
        revoked = self._revocations.current if self._revocations is not None else None
        if revoked is not None and len(revoked) and revoked.token_revoked(identity):
            raise TokenRevoked("token revoked")

    async def _verify_uncached(self, token: str) -> Identity:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenMalformed("token is not a signed JWT (compact JWS)")
        header = _json_object(parts[0], "header")
        claims = _json_object(parts[1], "payload")
        signature = b64url_decode(parts[2]) if parts[2] else b""
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenMalformed("token header has no 'alg'")
        if "crit" in header:
            raise TokenMalformed("token uses critical header extensions, which are not supported")
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenIssuerUnknown("token issuer is not trusted by this service")
        if alg not in issuer.algorithms or alg not in _ALGORITHMS:
            raise TokenAlgorithmRejected(f"token algorithm {_safe(alg)} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenMalformed("token header 'kid' is not a string")
        keys = await self._keys[issuer.issuer].keys_for(kid, alg)
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        verifier = _ALGORITHMS[alg]
        # Several keys may share a kid (mid-rotation): any one of them may have signed.
        if not signature or not any(verifier.verify(signing_input, k.key, signature) for k in keys):
            raise TokenSignatureInvalid("token signature is invalid")
        self._check_time_claims(claims)
        audiences = _strings(claims.get("aud"), "aud")
        if not set(audiences) & set(issuer.audiences):
            raise TokenAudienceInvalid("token audience is not accepted by this service")
        return identity_from_claims(claims, issuer)

    def _check_time_claims(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.wall()
        exp = _time(claims, "exp")
        if exp is None:
            raise TokenClaimsInvalid("token has no 'exp' claim")
        if now > exp + self._leeway:
            raise TokenExpired("token expired")
        nbf = _time(claims, "nbf")
        if nbf is not None and now + self._leeway < nbf:
            raise TokenNotYetValid("token is not valid yet ('nbf' is in the future)")
        iat = _time(claims, "iat")
        if iat is not None and now + self._leeway < iat:
            raise TokenNotYetValid("token was issued in the future ('iat')")
        auth_time = _time(claims, "auth_time")
        if auth_time is not None and now + self._leeway < auth_time:
            # A future auth_time would never grow stale against a step-up max_age.
            raise TokenClaimsInvalid("token 'auth_time' is in the future")


def _safe(alg: str) -> str:
    """An algorithm name fit to show: short and plain, else a placeholder."""
    return alg if len(alg) <= 10 and alg.isalnum() else "(unrecognised)"
