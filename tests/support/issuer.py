"""A real OIDC issuer for tests: discovery and JWKS over HTTP on a loopback port.

Tokens are minted with joserfc, a different JOSE library from the PyJWT that
extauthz verifies with, so a shared bug cannot make both sides agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.support.ports import free_port

AUDIENCE = "my-api"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalIssuer:
    """An IdP with one key per algorithm family; it can rotate keys and go down."""

    def __init__(self, *, path: str = "", cache_control: str = "max-age=300") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.issuer = self.base + path
        self.cache_control = cache_control
        self.down = False
        self.delay = 0.0  # seconds each answer waits (a slow IdP)
        self.discovery_issuer: str | None = None  # None: same as self.issuer
        self.discovery_jwks_uri: str | None = None  # None: this issuer's own /jwks
        self.requests: list[str] = []
        self.extra_jwks: list[dict[str, Any]] = []  # served after the issuer's own keys, as is
        self._generation = 0
        self._lock = threading.Lock()
        self.keys: dict[str, Any] = {}
        self.rotate()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    # --- keys -------------------------------------------------------------------------
    def rotate(self) -> None:
        """Replace every key with a new one (new kids): the old ones leave the JWKS."""
        self._generation += 1
        g = self._generation
        self.keys = {
            "RS256": RSAKey.generate_key(2048, parameters={"kid": f"rsa-{g}"}),
            "ES256": ECKey.generate_key("P-256", parameters={"kid": f"ec-{g}"}),
            "EdDSA": OKPKey.generate_key("Ed25519", parameters={"kid": f"ed-{g}"}),
        }
        self.keys["PS256"] = self.keys["RS256"]

    def jwks(self) -> dict[str, Any]:
        seen, out = set(), []
        for key in self.keys.values():
            d = key.as_dict(private=False)
            if d["kid"] not in seen:
                seen.add(d["kid"])
                out.append(d)
        return {"keys": out + list(self.extra_jwks)}

    @property
    def jwks_fetches(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.endswith("/jwks"))

    # --- tokens -----------------------------------------------------------------------
    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": AUDIENCE, "sub": "alice", "email": "alice@example.com",
            "groups": ["sre", "dev"], "scope": "read write", "iat": now, "exp": now + 600,
            "azp": "cli",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, alg: str = "RS256", *, kid: str | None = None, header: dict[str, Any] | None = None,
             **claims: Any) -> str:
        key = self.keys[alg]
        protected = {"alg": alg, "kid": kid or key.kid, "typ": "JWT", **(header or {})}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc flags EdDSA as superseded (RFC 9864)
            return jwt.encode(protected, self.claims(**claims), key, algorithms=[alg])

    def mint_unsigned(self, **claims: Any) -> str:
        header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{b64(json.dumps(self.claims(**claims)).encode())}."

    def mint_hs256_with_public_key(self, **claims: Any) -> str:
        """The classic key-confusion attack: HMAC keyed with the RSA public key PEM."""
        pem = self.keys["RS256"].as_pem(private=False)
        header = b64(json.dumps({"alg": "HS256", "kid": self.keys["RS256"].kid}).encode())
        body = b64(json.dumps(self.claims(**claims)).encode())
        sig = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{b64(sig)}"

    # --- HTTP -------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with issuer._lock:
                    issuer.requests.append(self.path)
                if issuer.delay:
                    time.sleep(issuer.delay)
                if issuer.down:
                    self.send_error(503)
                    return
                prefix = issuer.issuer[len(issuer.base):]
                if self.path == prefix + "/.well-known/openid-configuration":
                    body = {"issuer": issuer.discovery_issuer or issuer.issuer,
                            "jwks_uri": issuer.discovery_jwks_uri or f"{issuer.base}{prefix}/jwks"}
                    self._json(body, None)
                elif self.path == prefix + "/jwks":
                    self._json(issuer.jwks(), issuer.cache_control)
                else:
                    self.send_error(404)

            def _json(self, body: object, cache_control: str | None) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if cache_control:
                    self.send_header("cache-control", cache_control)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
