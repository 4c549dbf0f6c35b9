"""The NATS parsers read what a server (or anyone who can publish where it does) sends:
NATS JWTs, nkeys and xkv1-sealed messages. Each hostile shape is refused, never guessed.
Keys are cross-checked against the ``nkeys`` package, a different implementation."""

from __future__ import annotations

import base64
import json

import nkeys
import pytest

from extauthz.errors import TokenMalformed
from extauthz.identity.verify import b64url_decode
from extauthz.nats import jwt as natsjwt
from extauthz.nats.jwt import NatsJwtError
from extauthz.nats.nkey import CurvePair, Kind, NkeyError, SigningPair, decode_public, is_public


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(signer: SigningPair, header: bytes, claims: bytes) -> str:
    """A token signed over exactly these header and claims bytes (any JSON, duplicates too)."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    return f"{signing_input}.{b64(signer.sign(signing_input.encode()))}"


HEADER = b'{"typ":"JWT","alg":"ed25519-nkey"}'
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def account() -> SigningPair:
    return SigningPair.generate(Kind.ACCOUNT)


def test_a_well_formed_token_decodes(account: SigningPair) -> None:
    token = signed(account, HEADER, json.dumps({"iss": account.public, "sub": "U"}).encode())
    assert natsjwt.decode(token, Kind.ACCOUNT)["sub"] == "U"


def test_our_keys_are_the_nkeys_packages_keys(account: SigningPair) -> None:
    theirs = nkeys.from_seed(account.seed.encode())
    assert theirs.public_key.decode() == account.public
    token = natsjwt.encode({"sub": "U"}, account, 1)
    head, body, sig = token.split(".")
    assert theirs.verify(f"{head}.{body}".encode(), b64url_decode(sig))


@pytest.mark.parametrize("shape", [
    "padding", "trailing bits", "extra header member", "alg none", "duplicate iss",
    "non-ASCII", "huge", "two parts", "four parts", "user signer", "NaN claim",
])
def test_a_hostile_token_is_refused(account: SigningPair, shape: str) -> None:
    claims = json.dumps({"iss": account.public, "sub": "U"}).encode()
    token = signed(account, HEADER, claims)
    head, body, sig = token.split(".")
    hostile = {
        "padding": f"{head}.{body}==.{sig}" if len(body) % 4 else f"{head}.{body}.{sig}=",
        # the last character's unused low bits set: decodes to the same signature bytes
        "trailing bits": f"{head}.{body}.{sig[:-1]}{ALPHABET[ALPHABET.index(sig[-1]) + 1]}",
        "extra header member": signed(account, b'{"typ":"JWT","alg":"ed25519-nkey","kid":"x"}',
                                      claims),
        "alg none": signed(account, b'{"typ":"JWT","alg":"none"}', claims),
        "duplicate iss": signed(account, HEADER, (
            f'{{"iss":"{SigningPair.generate(Kind.ACCOUNT).public}",'
            f'"iss":"{account.public}","sub":"U"}}').encode()),
        "non-ASCII": token.replace("e", "é", 1),
        "huge": signed(account, HEADER, json.dumps({"iss": account.public,
                                                    "pad": "x" * 70_000}).encode()),
        "two parts": f"{head}.{body}",
        "four parts": f"{token}.{sig}",
        "user signer": signed(user := SigningPair.generate(Kind.USER), HEADER,
                              json.dumps({"iss": user.public}).encode()),
        "NaN claim": signed(account, HEADER,
                            f'{{"iss":"{account.public}","exp":NaN}}'.encode()),
    }[shape]
    with pytest.raises(NatsJwtError):
        natsjwt.decode(hostile, Kind.ACCOUNT)


def test_trailing_bits_are_refused_in_oidc_tokens_too() -> None:
    assert b64url_decode("QQ") == b"A"
    with pytest.raises(TokenMalformed):
        b64url_decode("QR")  # also b"A", spelt another way


def test_a_hostile_nkey_is_refused(account: SigningPair) -> None:
    public = account.public
    flipped = public[:10] + ("A" if public[10] != "A" else "B") + public[11:]
    for text, kind in ((public.lower(), Kind.ACCOUNT), (flipped, Kind.ACCOUNT),
                       (public[:-4], Kind.ACCOUNT), (public, Kind.SERVER),
                       (public, Kind.CURVE), (public + "A", Kind.ACCOUNT), ("", Kind.ACCOUNT)):
        assert not is_public(text, kind), (text, kind)
        with pytest.raises(NkeyError):
            decode_public(text, kind)


def test_a_hostile_sealed_message_is_refused() -> None:
    server, us, other = CurvePair.generate(), CurvePair.generate(), CurvePair.generate()
    sealed = server.seal(b"request", us.public)
    assert us.open(sealed, server.public) == b"request"
    for data, sender in ((sealed[:28], server.public), (b"xkv2" + sealed[4:], server.public),
                         (server.seal(b"request", other.public), server.public),
                         (sealed[:-1] + bytes([sealed[-1] ^ 1]), server.public)):
        with pytest.raises(NkeyError):
            us.open(data, sender)
    with pytest.raises(NkeyError):  # a signing key where a curve key belongs
        us.open(sealed, SigningPair.generate(Kind.SERVER).public)
