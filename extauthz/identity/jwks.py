"""Per-issuer signing keys: fetched once, refreshed in the background, kept when the IdP is down.

What users of PyJWT and go-oidc run into, and what this does instead:
- a blocking fetch on the request path -> one async fetch in flight per issuer, shared;
- the cache cleared on a failed fetch -> the last good key set is kept, indefinitely;
- every unknown ``kid`` refetches -> at most one unknown-``kid`` refetch per
  ``unknown_kid_cooldown``, counted against each other only: a scheduled refresh or the fetch
  at start does not hold back the first token signed with a key published a moment ago;
- the last of several keys sharing a ``kid`` wins -> every one is kept and tried;
- ``use``/``key_ops`` ignored, short RSA keys accepted -> only keys meant for verifying, RSA of
  at least 2048 bits;
- a fixed TTL -> ``Cache-Control: max-age`` clamped to [60 s, 24 h], refreshed at 3/4 of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from extauthz.clock import Clock
from extauthz.config import IssuerSettings, JWKSSettings, is_loopback_url
from extauthz.errors import JWKSFetchError, KeysUnavailable, TokenKeyUnknown
from extauthz.telemetry import tracing

log = logging.getLogger("extauthz.jwks")

MIN_TTL = 60
MAX_TTL = 86400
MAX_DOCUMENT_BYTES = 1 << 20
MIN_RSA_BITS = 2048  # NIST SP 800-131A; RFC 7518 §3.3 requires 2048 for RS*/PS*
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)

# Which key type (and curve) each JWS algorithm may be verified with.
KEY_TYPE_FOR_ALG: Mapping[str, tuple[str, str | None]] = MappingProxyType({
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None), "Ed25519": ("OKP", "Ed25519"),  # RFC 9864 fully-specified name
})


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: Any  # a cryptography public key object

    def can_verify(self, alg: str) -> bool:
        want = KEY_TYPE_FOR_ALG.get(alg)
        if want is None or want[0] != self.kty:
            return False
        if want[1] is not None and want[1] != self.crv:
            return False
        return self.alg is None or self.alg == alg


def ttl_from_cache_control(header: str | None, default: int) -> int:
    """Seconds to keep a JWKS: ``max-age`` if given, clamped to [60 s, 24 h]."""
    if header:
        lowered = header.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return MIN_TTL
        m = _MAX_AGE.search(header)
        if m:
            return max(MIN_TTL, min(MAX_TTL, int(m.group(1))))
    return max(MIN_TTL, min(MAX_TTL, default))


def _not_for_verifying(entry: Mapping[str, Any]) -> str | None:
    """Why a JWK may not verify signatures (RFC 7517 §4.2, §4.3), or None if it may."""
    if "d" in entry:
        return "it holds private key material"
    use = entry.get("use")
    if use is not None and use != "sig":
        return "its 'use' is not 'sig'"
    ops = entry.get("key_ops")
    if ops is not None:
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            return "its 'key_ops' is not a list of strings"
        if len(set(ops)) != len(ops):
            return "its 'key_ops' repeats an operation"
        if "verify" not in ops:
            return "its 'key_ops' does not include 'verify'"
    return None


def parse_jwks(doc: object) -> list[SigningKey]:
    """The usable signing keys of a JWKS document; others are skipped with a log line."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JWKSFetchError("JWKS document has no 'keys' list")
    keys: list[SigningKey] = []
    for entry in doc["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        why = _not_for_verifying(entry)
        if why is not None:
            log.warning("jwks: skipping key %r: %s", kid, why)
            continue
        try:
            parsed = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as e:
            log.warning("jwks: skipping key %r: %r", kid, str(e))
            continue
        if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < MIN_RSA_BITS:
            log.warning("jwks: skipping key %r: RSA key of %d bits (at least %d required)",
                        kid, parsed.key.key_size, MIN_RSA_BITS)
            continue
        alg = entry.get("alg")
        keys.append(SigningKey(
            kid=kid if isinstance(kid, str) else None,
            kty=str(entry.get("kty")),
            crv=entry.get("crv") if isinstance(entry.get("crv"), str) else None,
            alg=alg if isinstance(alg, str) else None,
            key=parsed.key,
        ))
    if not keys:
        raise JWKSFetchError("JWKS document holds no usable signing key")
    return keys


class HttpFetcher:
    """GETs small JSON documents from IdPs, with a timeout, a size cap and an optional CA."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_for(self, ca_file: str | None) -> ssl.SSLContext | bool:
        if ca_file is None:
            return True
        if ca_file not in self._ssl:
            self._ssl[ca_file] = ssl.create_default_context(cafile=ca_file)
        return self._ssl[ca_file]

    async def get_json(self, url: str, ca_file: str | None) -> tuple[object, str | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(
                url, ssl=self._ssl_for(ca_file), headers={"accept": "application/json"},
                allow_redirects=False,  # a redirect could downgrade to http or leave the IdP
            ) as resp:
                if resp.status != 200:
                    raise JWKSFetchError(f"{url} answered HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise JWKSFetchError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
                cache_control = resp.headers.get("cache-control")
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as e:
            raise JWKSFetchError(f"cannot fetch {url}: {e.__class__.__name__}: {e}") from e
        try:
            return json.loads(body), cache_control
        except (ValueError, UnicodeDecodeError) as e:
            raise JWKSFetchError(f"{url} did not return JSON") from e


class IssuerKeys:
    """The signing keys of one issuer, with discovery, refresh and refetch limits."""

    def __init__(
        self, issuer: IssuerSettings, settings: JWKSSettings, fetcher: HttpFetcher, clock: Clock
    ) -> None:
        self.issuer = issuer
        self._settings = settings
        self._fetcher = fetcher
        self._clock = clock
        self._by_kid: dict[str, tuple[SigningKey, ...]] = {}
        self._all: tuple[SigningKey, ...] = ()
        self._jwks_uri = issuer.jwks_uri
        # Keys of an https issuer come over https only (http is for local/demo issuers).
        self._schemes: tuple[str, ...] = (("https://",) if issuer.issuer.startswith("https://")
                                          else ("https://", "http://"))
        self._inflight: asyncio.Future[bool] | None = None
        self._last_attempt = float("-inf")  # any fetch: gates fetches while no keys are loaded
        self._kid_refetch: asyncio.Future[None] | None = None
        self._last_kid_refetch = float("-inf")  # unknown-kid refetches only
        # Without any keys, requests may start a fetch, but not more often than this.
        self._retry_gate = min(settings.unknown_kid_cooldown, 5.0)
        self.ttl = settings.default_ttl
        self.loaded = False
        self.fetches = 0
        self.failures = 0
        self.last_error: str | None = None

    async def keys_for(self, kid: str | None, alg: str) -> tuple[SigningKey, ...]:
        """The keys that may verify a token with this ``kid`` and ``alg`` (several when the
        IdP publishes several under one ``kid``), refetching if allowed."""
        if not self.loaded:
            idle = self._inflight is None or self._inflight.done()
            if idle and self._clock.monotonic() - self._last_attempt < self._retry_gate:
                raise KeysUnavailable(f"signing keys of {self.issuer.issuer} are not available")
            await self.refresh()
            if not self.loaded:
                raise KeysUnavailable(f"signing keys of {self.issuer.issuer} are not available")
        keys = self._lookup(kid, alg)
        if keys:
            return keys
        await self._refetch_for_unknown_kid(kid, alg)
        keys = self._lookup(kid, alg)
        if keys:
            return keys
        raise TokenKeyUnknown("token is signed with a key the issuer does not publish")

    def _lookup(self, kid: str | None, alg: str) -> tuple[SigningKey, ...]:
        if kid is not None:
            return tuple(k for k in self._by_kid.get(kid, ()) if k.can_verify(alg))
        usable = tuple(k for k in self._all if k.can_verify(alg))
        return usable if len(usable) == 1 else ()  # no kid and a choice of keys: ambiguous

    async def _refetch_for_unknown_kid(self, kid: str | None, alg: str) -> None:
        """Refetch for a ``kid`` we do not know: at most once per cooldown, counted against
        other unknown-``kid`` refetches only. Callers arriving while one is under way wait
        for it (they may carry the same new key) instead of being refused."""
        pending = self._kid_refetch
        if pending is None or pending.done():
            now = self._clock.monotonic()
            if now - self._last_kid_refetch < self._settings.unknown_kid_cooldown:
                return
            self._last_kid_refetch = now
            pending = self._kid_refetch = asyncio.ensure_future(self._refetch(kid, alg))
        await asyncio.shield(pending)

    async def _refetch(self, kid: str | None, alg: str) -> None:
        # A fetch under way (a scheduled refresh) may have started before the key was
        # published: let it finish, and fetch again only if it did not bring the key.
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
            if self._lookup(kid, alg):
                return
        await self.refresh()

    async def refresh(self) -> bool:
        """Fetch the key set; concurrent callers share one fetch. False when it failed."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> bool:
        self._last_attempt = self._clock.monotonic()
        self.fetches += 1
        try:
            with tracing.span("extauthz.jwks.fetch", {"extauthz.issuer": self.issuer.issuer}):
                uri = self._jwks_uri or await self._discover()
                doc, cache_control = await self._fetcher.get_json(uri, self.issuer.ca_file)
                keys = parse_jwks(doc)
        except JWKSFetchError as e:
            self.failures += 1
            self.last_error = e.message
            log.warning("jwks: %s: %s (keeping %d cached keys)",
                        self.issuer.issuer, e.message, len(self._all))
            return False
        self._jwks_uri = uri
        self._all = tuple(keys)
        by_kid: dict[str, list[SigningKey]] = {}
        for k in keys:
            if k.kid is not None:
                by_kid.setdefault(k.kid, []).append(k)
        self._by_kid = {kid: tuple(same) for kid, same in by_kid.items()}
        self.ttl = ttl_from_cache_control(cache_control, self._settings.default_ttl)
        self.loaded = True
        self.last_error = None
        log.info("jwks: %s: %d keys, refresh in %ds", self.issuer.issuer, len(keys), self.ttl)
        return True

    async def _discover(self) -> str:
        url = self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc, _ = await self._fetcher.get_json(url, self.issuer.ca_file)
        if not isinstance(doc, dict):
            raise JWKSFetchError(f"{url} is not an OIDC discovery document")
        if doc.get("issuer") != self.issuer.issuer:
            raise JWKSFetchError(
                f"discovery at {url} names issuer {doc.get('issuer')!r}, "
                f"not the configured {self.issuer.issuer!r}; they must match exactly"
            )
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(self._schemes):
            raise JWKSFetchError(f"discovery at {url} has no usable jwks_uri (an https issuer "
                                 "must publish its keys over https)")
        if (uri.startswith("http://") and not self.issuer.insecure_http
                and not is_loopback_url(uri)):
            # A local http issuer may not send key fetches over plain http to another host.
            raise JWKSFetchError(f"discovery at {url} names a plain-http jwks_uri on another "
                                 "host; publish the keys over https (or set insecure_http)")
        return uri

    async def run(self) -> None:
        """Background loop: refresh at 3/4 of the TTL; on failure retry with backoff."""
        backoff = 1.0
        while True:
            try:
                ok = await self.refresh()
            except Exception:
                log.exception("jwks: %s: unexpected error; retrying", self.issuer.issuer)
                ok = False
            if ok:
                backoff = 1.0
                delay = self.ttl * 0.75
            else:
                delay = backoff
                backoff = min(backoff * 2, 60.0)
            await asyncio.sleep(delay)
