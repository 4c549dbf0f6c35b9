"""The benchmark's token issuer: an RS256 and an ES256 key, a JWKS and discovery document
served on loopback, and tokens padded to a realistic size (~800 bytes, as Okta or Keycloak
access tokens with a few groups are)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "bench-api"
TOKEN_BYTES = 800


@dataclass
class BenchIssuer:
    port: int
    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update(kid="bench-rs256", alg="RS256", use="sig")
        ec_jwk.update(kid="bench-es256", alg="ES256", use="sig")
        return {"keys": [rsa_jwk, ec_jwk]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks.json",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def mint(
        self,
        alg: str = "RS256",
        *,
        subject: str = "bench-user",
        groups: tuple[str, ...] = ("dev",),
        ttl: int = 3600,
        size: int = TOKEN_BYTES,
    ) -> str:
        """A token of about ``size`` bytes: the claims are padded with a ``name`` of the right length."""
        key: Any = self.rsa_key if alg == "RS256" else self.ec_key
        kid = "bench-rs256" if alg == "RS256" else "bench-es256"
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "email": f"{subject}@bench.example",
            "email_verified": True,
            "groups": list(groups),
            "scope": "openid profile email",
            "name": "",
        }
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        pad = max(0, size - len(token)) * 3 // 4  # base64url: 4 characters per 3 bytes
        claims["name"] = "x" * pad
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    def start(self) -> BenchIssuer:
        documents = {"/.well-known/openid-configuration": self.discovery(), "/jwks.json": self.jwks()}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                doc = documents.get(self.path)
                body = json.dumps(doc).encode() if doc is not None else b"{}"
                self.send_response(200 if doc is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", "max-age=86400")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="bench-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
