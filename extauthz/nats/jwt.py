"""NATS JWTs as nats-io/jwt v2 writes and reads them (``v2/claims.go``, ``v2/header.go``).

A JWT is ``base64url(header).base64url(claims).base64url(signature)`` without padding; the
header is ``{"typ":"JWT","alg":"ed25519-nkey"}``; the signature is the issuer nkey's Ed25519
signature of the first two parts. Encoding sets ``iss`` (the signer's public key) and ``iat``,
then ``jti``: base32 (no padding) of the SHA-512/256 of the JSON of the standard claims alone
(``aud exp iat iss name nbf sub``, ``jti`` left out), in Go's field order and escaping.
Decoding is strict: that header exactly, I-JSON claims, a signature by ``iss`` of the kind
the caller expects.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from extauthz.errors import TokenMalformed
from extauthz.identity import jose_json
from extauthz.identity.verify import b64url_decode
from extauthz.nats.nkey import Kind, SigningPair, is_public, verify

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_STANDARD = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")  # ClaimsData's order
_MAX_BYTES = 64 * 1024
# Go's encoding/json escapes these where Python's json writes them raw.
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


class NatsJwtError(ValueError):
    """Not a NATS JWT we accept; the message says why, never echoing its contents."""


def go_json(value: Any) -> bytes:
    """JSON as Go's ``json.Marshal`` writes it: compact, HTML characters escaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).translate(_GO_ESCAPES).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    try:
        return b64url_decode(segment)  # the one strict decoder, as for OIDC tokens
    except TokenMalformed as e:
        raise NatsJwtError("not canonical base64url") from e


def jti(standard: Mapping[str, Any]) -> str:
    """nats-io/jwt's ``ClaimsData.hash``: the standard claims without ``jti``, empty ones left
    out (``omitempty``), SHA-512/256, base32 without padding."""
    data = {k: standard[k] for k in _STANDARD if k != "jti" and standard.get(k)}
    digest = hashlib.new("sha512_256", go_json(data)).digest()
    return base64.b32encode(digest).decode().rstrip("=")


def encode(claims: Mapping[str, Any], signer: SigningPair, now: int) -> str:
    """Sign ``claims`` (standard claims and ``nats``) as ``signer``: ``iss``, ``iat`` and
    ``jti`` are set here, as nats-io/jwt's ``encode`` sets them."""
    standard = {k: claims[k] for k in _STANDARD if claims.get(k)}
    standard.update(iss=signer.public, iat=now)
    standard.pop("jti", None)
    ordered = {k: standard[k] for k in _STANDARD if k in standard}
    ordered = {**{k: v for k, v in ordered.items() if k in ("aud", "exp")}, "jti": jti(ordered),
               **{k: v for k, v in ordered.items() if k not in ("aud", "exp")}}
    body = {**ordered, **{k: v for k, v in claims.items() if k not in _STANDARD}}
    signing_input = f"{_b64(go_json(HEADER))}.{_b64(go_json(body))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode(token: str, issuer_kind: Kind) -> dict[str, Any]:
    """The claims of a NATS JWT signed by its ``iss``, an nkey of ``issuer_kind``; anything
    else raises NatsJwtError. Times and the audience are the caller's to check."""
    if len(token) > _MAX_BYTES or not token.isascii():
        raise NatsJwtError("too large or not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise NatsJwtError("not three dot-separated parts")
    header, claims = (_json(_unb64(p)) for p in parts[:2])
    if header != HEADER:
        raise NatsJwtError('the header is not {"typ":"JWT","alg":"ed25519-nkey"}')
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not is_public(issuer, issuer_kind):
        raise NatsJwtError(f"'iss' is not a {issuer_kind.name.lower()} public nkey")
    if not verify(issuer, issuer_kind, f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2])):
        raise NatsJwtError("the signature is not the issuer's")
    return claims


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = jose_json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise NatsJwtError("not I-JSON") from e
    if not isinstance(value, dict):
        raise NatsJwtError("not a JSON object")
    return value
