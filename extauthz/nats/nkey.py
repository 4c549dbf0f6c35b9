"""NATS nkeys: Ed25519 keys for signing, X25519 ("curve", ``X…``) keys for sealing.

The text form (nats-io/nkeys ``strkey.go``): base32 without padding of a prefix byte, the 32
raw bytes and a CRC-16/XMODEM (little-endian); a seed (``S…``) has two prefix bytes, the
seed marker and the key's kind. Sealing (``xkeys.go``): ``xkv1`` + a 24-byte nonce + NaCl
``box`` (X25519, XSalsa20-Poly1305), the seed used as the X25519 private key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from enum import IntEnum

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

XKEY_VERSION = b"xkv1"
_NONCE = 24
_SEED = 18 << 3
_BASE32 = re.compile(r"[A-Z2-7]{1,128}")


class Kind(IntEnum):
    """The prefix byte of a key's kind (its first letter in text)."""

    ACCOUNT = 0  # A
    SERVER = 13 << 3  # N
    OPERATOR = 14 << 3  # O
    USER = 20 << 3  # U
    CURVE = 23 << 3  # X


class NkeyError(ValueError):
    """Not a valid nkey of the expected kind; the message says what, never the key."""


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32decode(text: str) -> bytes:
    if not _BASE32.fullmatch(text):
        raise NkeyError("not an nkey (upper-case base32)")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as e:
        raise NkeyError("not an nkey (upper-case base32)") from e


def _checked(raw: bytes) -> bytes:
    if len(raw) < 3 or _crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        raise NkeyError("the nkey's checksum does not match (a typo or a truncated key)")
    return raw[:-2]


def _encode(prefix: bytes, key: bytes) -> str:
    raw = prefix + key
    raw += _crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


def encode_public(kind: Kind, key: bytes) -> str:
    return _encode(bytes([kind]), key)


def decode_public(text: str, kind: Kind) -> bytes:
    """The 32 raw bytes of a public key of ``kind`` (``U…``, ``N…``, ``A…``, ``X…``)."""
    body = _checked(_b32decode(text))
    if len(body) != 33 or body[0] != kind:
        raise NkeyError(f"not a public {kind.name.lower()} nkey")
    return body[1:]


def is_public(text: str, kind: Kind) -> bool:
    try:
        decode_public(text, kind)
    except NkeyError:
        return False
    return True


def encode_seed(kind: Kind, seed: bytes) -> str:
    return _encode(bytes([_SEED | kind >> 5, (kind & 31) << 3]), seed)


def decode_seed(text: str) -> tuple[Kind, bytes]:
    """A seed's kind and its 32 raw bytes."""
    body = _checked(_b32decode(text))
    if len(body) != 34 or body[0] & 0xF8 != _SEED:
        raise NkeyError("not an nkey seed (S…)")
    try:
        kind = Kind((body[0] & 7) << 5 | (body[1] & 0xF8) >> 3)
    except ValueError as e:
        raise NkeyError("an nkey seed of an unknown kind") from e
    return kind, body[2:]


@dataclass(frozen=True)
class SigningPair:
    """An Ed25519 nkey (account ``SA…``, server, user …) that signs JWTs."""

    kind: Kind
    key: SigningKey

    @classmethod
    def from_seed(cls, text: str, kind: Kind) -> SigningPair:
        found, seed = decode_seed(text)
        if found != kind or kind == Kind.CURVE:
            raise NkeyError(f"not a {kind.name.lower()} seed (S{encode_seed(kind, bytes(32))[1]}…)")
        return cls(kind, SigningKey(seed))

    @classmethod
    def generate(cls, kind: Kind) -> SigningPair:
        return cls(kind, SigningKey(os.urandom(32)))

    @property
    def public(self) -> str:
        return encode_public(self.kind, bytes(self.key.verify_key))

    @property
    def seed(self) -> str:
        return encode_seed(self.kind, bytes(self.key))

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data).signature


def verify(public: str, kind: Kind, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``data``."""
    try:
        VerifyKey(decode_public(public, kind)).verify(data, signature)
    except (NkeyError, BadSignatureError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class CurvePair:
    """An X25519 xkey (``SX…``): opens what the server sealed for it, seals the answer back."""

    key: PrivateKey

    @classmethod
    def from_seed(cls, text: str) -> CurvePair:
        kind, seed = decode_seed(text)
        if kind != Kind.CURVE:
            raise NkeyError("not a curve (xkey) seed (SX…)")
        return cls(PrivateKey(seed))

    @classmethod
    def generate(cls) -> CurvePair:
        return cls(PrivateKey(os.urandom(32)))

    @property
    def public(self) -> str:
        return encode_public(Kind.CURVE, bytes(self.key.public_key))

    @property
    def seed(self) -> str:
        return encode_seed(Kind.CURVE, bytes(self.key))

    def seal(self, data: bytes, recipient: str) -> bytes:
        nonce = os.urandom(_NONCE)
        box = Box(self.key, PublicKey(decode_public(recipient, Kind.CURVE)))
        return XKEY_VERSION + nonce + box.encrypt(data, nonce).ciphertext

    def open(self, data: bytes, sender: str) -> bytes:
        if len(data) <= len(XKEY_VERSION) + _NONCE or not data.startswith(XKEY_VERSION):
            raise NkeyError("not an xkv1 sealed message")
        start = len(XKEY_VERSION)
        box = Box(self.key, PublicKey(decode_public(sender, Kind.CURVE)))
        try:
            return box.decrypt(data[start + _NONCE:], data[start:start + _NONCE])
        except CryptoError as e:
            raise NkeyError("the sealed message does not open with this xkey") from e
