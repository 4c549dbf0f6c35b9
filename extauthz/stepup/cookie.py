"""The step-up cookie: a compact JWS (ES256) signed by this service.

Claims: ``iss`` and ``sub`` of the user's token, ``auth_time`` (when the WebAuthn
assertion happened), ``acr: urn:extauthz:webauthn``, ``amr: ["hwk", "user"]``
(RFC 8176), ``cid`` (the credential id), ``iat`` and ``exp``. It is accepted only for
the same ``iss`` + ``sub`` as the current token; each policy then asks for its own
``max_age``. The header's ``typ`` keeps it from being mistaken for any other JWT.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from extauthz.cache import BoundedCache
from extauthz.clock import Clock
from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR

log = logging.getLogger("extauthz.stepup")

AMR = ["hwk", "user"]
TYP = "extauthz-stepup+jwt"


def new_signing_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_signing_key(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{where} is not an EC P-256 private key")
    return key


@dataclass(frozen=True, slots=True)
class StepupProof:
    issuer: str
    subject: str
    auth_time: int
    expires_at: int
    credential_id: str


class StepupCookies:
    def __init__(self, key: ec.EllipticCurvePrivateKey, lifetime: int, clock: Clock,
                 cache_size: int = 10000) -> None:
        self._key = key
        self._public = key.public_key()
        self._lifetime = lifetime
        self._clock = clock
        # (proof,): a cookie that is not valid is kept too, as (None,)
        self._cache: BoundedCache[bytes, tuple[StepupProof | None]] = BoundedCache(cache_size, lru=True)

    def mint(self, identity: Identity, credential_id: str) -> str:
        now = int(self._clock.wall())
        claims = {"iss": identity.issuer, "sub": identity.subject, "auth_time": now,
                  "acr": WEBAUTHN_ACR, "amr": AMR, "cid": credential_id, "iat": now,
                  "exp": now + self._lifetime}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"typ": TYP})

    def _parse(self, value: str) -> StepupProof | None:
        try:
            header = jwt.get_unverified_header(value)
            if header.get("typ") != TYP:
                return None
            claims = jwt.decode(value, self._public, algorithms=["ES256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False, "verify_aud": False,
                                         "require": ["iss", "sub", "auth_time", "exp"]})
            return StepupProof(str(claims["iss"]), str(claims["sub"]), int(claims["auth_time"]),
                               int(claims["exp"]), str(claims.get("cid", "")))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return None

    def verify(self, value: str, identity: Identity) -> StepupProof | None:
        """The proof in a valid, unexpired cookie of this same user, else None."""
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
        kept = self._cache.get(digest)
        if kept is None:
            kept = self._cache.put(digest, (self._parse(value),))
        else:
            self._cache.touch(digest)
        proof = kept[0]
        if proof is None or self._clock.wall() > proof.expires_at:
            return None
        if (proof.issuer, proof.subject) != (identity.issuer, identity.subject):
            return None
        return proof
