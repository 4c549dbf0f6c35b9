"""The built-in demo OIDC issuer: an ES256 key kept in a file, discovery and JWKS, tokens.

For laptops and the demo only. Its key is generated on first use and stored with
mode 0600; ``extauthz token`` mints tokens with it. Never enable it in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from extauthz.config import DemoIssuerSettings
from extauthz.errors import ConfigError


@dataclass(frozen=True)
class DemoIssuer:
    issuer: str
    audience: str
    private_key: ec.EllipticCurvePrivateKey
    kid: str

    @property
    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return {"keys": [jwk]}

    @property
    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }

    def mint(
        self,
        *,
        subject: str,
        email: str | None = None,
        groups: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
        ttl: int = 3600,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": subject,
            "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex,
            "auth_time": now,  # each demo token is a sign-in: a first passkey may follow
            "email": email or f"{subject}@example.com", "email_verified": True,
        }
        if groups:
            claims["groups"] = list(groups)
        if scopes:
            claims["scope"] = " ".join(scopes)
        claims.update(extra or {})
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid})


def _thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 JWK thumbprint of the public key, used as its ``kid``."""
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"),
                           sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_or_create_key(path: str) -> ec.EllipticCurvePrivateKey:
    """Read the demo key, or create it (atomically, mode 0600) when the file is absent."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, p)  # fails if another process won the race; then use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        loaded = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise ConfigError(f"config: demo_issuer.key_file {path!r} is not a readable PEM key; "
                          "delete it to have a new one generated") from e
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"config: demo_issuer.key_file {path!r} is not an EC P-256 key")
    return loaded


def demo_issuer(settings: DemoIssuerSettings) -> DemoIssuer:
    key = load_or_create_key(settings.key_file)
    return DemoIssuer(issuer=settings.issuer, audience=settings.audience, private_key=key,
                      kid=_thumbprint(key))
