"""Hostile tokens and key sets (issue 11): each is refused at verification, never guessed.

Tokens whose JSON no JOSE library would write (NaN, Infinity, duplicate keys, huge numbers)
are built by hand here: base64url of the raw JSON text, signed with the test issuer's own
private key through ``cryptography``.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse
from joserfc.jwk import RSAKey

from extauthz import errors
from extauthz.authorize import Authorizer
from extauthz.identity.jwks import parse_jwks
from extauthz.policy.model import WEBAUTHN_ACR
from extauthz.request import RequestView
from tests.support.clock import FakeClock
from tests.support.inproc import ServerThread
from tests.support.issuer import LocalIssuer, b64
from tests.support.requests import CHECK, bearer, check_request, request_view
from tests.support.settings import make_settings, serving_settings
from tests.support.verifying import Verifying as Rig
from tests.support.verifying import policy_snapshot, verifying


@pytest.fixture
async def rig(issuer: LocalIssuer) -> AsyncIterator[Rig]:
    async with verifying(issuer) as rig:  # the keys fetched, as at start
        yield rig


def _private_rsa(issuer: LocalIssuer) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(issuer.keys["RS256"].as_pem(private=True), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def sign_raw(key: rsa.RSAPrivateKey, header: str, payload: str) -> str:
    """A compact RS256 JWS over exactly these JSON texts (no re-encoding on the way)."""
    signing_input = f"{b64(header.encode())}.{b64(payload.encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def raw_token(issuer: LocalIssuer, payload: str, header: str | None = None) -> str:
    """A token signed by the issuer's real RS256 key over raw header and payload text."""
    if header is None:
        header = json.dumps({"alg": "RS256", "kid": issuer.keys["RS256"].kid, "typ": "JWT"})
    return sign_raw(_private_rsa(issuer), header, payload)


def payload_with(issuer: LocalIssuer, **raw: str) -> str:
    """The issuer's usual claims as JSON text, with some values replaced by raw JSON text."""
    claims = issuer.claims()
    for name in raw:
        claims[name] = f"@@{name}@@"
    text = json.dumps(claims)
    for name, value in raw.items():
        text = text.replace(f'"@@{name}@@"', value)
    return text


# --- item 10: non-standard JSON numbers, huge numbers, duplicate keys ---------------------------

@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "auth_time"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_in_a_time_claim_are_refused_as_malformed(
    rig: Rig, claim: str, value: str
) -> None:
    token = raw_token(rig.issuer, payload_with(rig.issuer, **{claim: value}))
    with pytest.raises(errors.TokenMalformed, match="not standard JSON"):
        await rig.verifier.verify(token)


async def test_nan_anywhere_in_the_payload_is_refused(rig: Rig) -> None:
    token = raw_token(rig.issuer, payload_with(rig.issuer, tenant='{"weight": NaN}'))
    with pytest.raises(errors.TokenMalformed, match="not standard JSON"):
        await rig.verifier.verify(token)


async def test_nan_in_the_header_is_refused(rig: Rig) -> None:
    header = '{"alg": "RS256", "kid": "' + rig.issuer.keys["RS256"].kid + '", "x": NaN}'
    token = raw_token(rig.issuer, json.dumps(rig.issuer.claims()), header)
    with pytest.raises(errors.TokenMalformed, match="not standard JSON"):
        await rig.verifier.verify(token)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "auth_time"])
@pytest.mark.parametrize("value", ["1e400", "-1e400", str(10**400), str(-(10**400)), "1e300"])
async def test_huge_time_claims_are_a_clean_token_error(rig: Rig, claim: str, value: str) -> None:
    token = raw_token(rig.issuer, payload_with(rig.issuer, **{claim: value}))
    with pytest.raises(errors.TokenError):
        await rig.verifier.verify(token)


async def test_a_fractional_expiry_in_range_is_still_accepted(rig: Rig) -> None:
    now = rig.clock.wall()
    token = raw_token(rig.issuer, payload_with(rig.issuer, exp=repr(now + 600.5),
                                               iat=repr(now - 0.25)))
    assert (await rig.verifier.verify(token)).subject == "alice"


@pytest.mark.parametrize(
    "payload_tail",
    [', "sub": "admin"}', ', "exp": 9999999999}', ', "groups": ["system:masters"]}',
     ', "x": {"a": 1, "a": 2}}'],
)
async def test_duplicate_keys_in_the_payload_are_refused(rig: Rig, payload_tail: str) -> None:
    payload = json.dumps(rig.issuer.claims())[:-1] + payload_tail
    with pytest.raises(errors.TokenMalformed, match="duplicate"):
        await rig.verifier.verify(raw_token(rig.issuer, payload))


async def test_duplicate_keys_in_the_header_are_refused(rig: Rig) -> None:
    kid = rig.issuer.keys["RS256"].kid
    header = f'{{"alg": "RS256", "kid": "{kid}", "kid": "{kid}"}}'
    with pytest.raises(errors.TokenMalformed, match="duplicate"):
        await rig.verifier.verify(raw_token(rig.issuer, json.dumps(rig.issuer.claims()), header))


async def test_a_hand_built_token_with_plain_json_verifies(rig: Rig) -> None:
    """The control for the tests above: the hand-built path itself is sound."""
    assert (await rig.verifier.verify(raw_token(rig.issuer, json.dumps(rig.issuer.claims())))
            ).subject == "alice"


# --- through the real gRPC service -----------------------------------------------------------

@pytest.fixture(scope="module")
def grpc_check(idp: LocalIssuer) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    thread = ServerThread(serving_settings(idp, login_url=None)).start()
    channel = thread.channel()
    try:
        yield channel.unary_unary(CHECK)
    finally:
        channel.close()
        thread.stop()


def _check(call: grpc.UnaryUnaryMultiCallable, token: str) -> CheckResponse:
    raw = check_request(bearer(token, accept="application/json"))
    return CheckResponse.parse(call(raw, timeout=5))


@pytest.mark.parametrize(
    "raw", [{"exp": "NaN"}, {"iat": "NaN"}, {"exp": "1e400"}, {"exp": str(10**400)},
            {"auth_time": str(10**400)}, {"groups": '[" system:masters"]'}],
    ids=["exp-nan", "iat-nan", "exp-1e400", "exp-10e400", "auth_time-10e400", "group-space"],
)
def test_over_grpc_a_hostile_token_is_a_401_invalid_token_not_an_allow_or_a_503(
    grpc_check: grpc.UnaryUnaryMultiCallable, idp: LocalIssuer, raw: dict[str, str]
) -> None:
    resp = _check(grpc_check, raw_token(idp, payload_with(idp, **raw)))
    assert resp.status.code == 16  # UNAUTHENTICATED
    assert int(resp.denied_response.status.code) == 401
    headers = {h.header.key: h.header.value for h in resp.denied_response.headers}
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "system:masters" not in resp.denied_response.body


def test_over_grpc_the_control_token_is_allowed(
    grpc_check: grpc.UnaryUnaryMultiCallable, idp: LocalIssuer
) -> None:
    assert _check(grpc_check, raw_token(idp, json.dumps(idp.claims()))).status.code == 0


# --- item 9: whitespace, control characters and separators in claims --------------------------

@pytest.mark.parametrize(
    ("claims", "claim"),
    [
        ({"groups": [" system:masters"]}, "groups"),
        ({"groups": ["system:masters "]}, "groups"),
        ({"groups": ["sre", "\tsystem:masters"]}, "groups"),
        ({"groups": ["system:masters\n"]}, "groups"),
        ({"groups": ["sys\x00tem:masters"]}, "groups"),
        ({"groups": ["a\x7fb"]}, "groups"),
        ({"groups": ["a\u2028b"]}, "groups"),
        ({"groups": ["dev,system:masters"]}, "groups"),
        ({"groups": ""}, "groups"),
        ({"groups": ["sre", ""]}, "groups"),
        ({"groups": " system:masters"}, "groups"),
        ({"sub": " admin"}, "sub"),
        ({"sub": "admin\n"}, "sub"),
        ({"sub": "al\x1bice"}, "sub"),
        ({"scope": " read"}, "scope"),
        ({"scope": "read  write"}, "scope"),
        ({"scope": "read\tadmin:write"}, "scope"),
        ({"scope": "read\x00"}, "scope"),
        ({"scope": None, "scp": ["read admin:write"]}, "scp"),
        ({"scope": None, "scp": [" read"]}, "scp"),
        ({"scope": None, "scp": ["read", ""]}, "scp"),
        ({"scope": None, "scp": "read admin\r\n"}, "scp"),
        ({"email": "alice@example.com\r\nx-auth-groups: system:masters"}, "email"),
        ({"email": " alice@example.com"}, "email"),
        ({"acr": "phr\x00"}, "acr"),
    ],
)
async def test_claims_with_whitespace_control_characters_or_separators_are_refused(
    rig: Rig, claims: dict[str, Any], claim: str
) -> None:
    with pytest.raises(errors.TokenClaimsInvalid) as err:
        await rig.verifier.verify(rig.issuer.mint("RS256", **claims))
    assert err.value.code == "token_claims_invalid"
    assert f"'{claim}'" in err.value.message
    assert "system:masters" not in err.value.message
    assert "admin" not in err.value.message


async def test_a_username_claim_with_surrounding_whitespace_is_refused(issuer: LocalIssuer) -> None:
    async with verifying(issuer, username_claim="preferred_username") as rig:
        for bad in ("root ", " root", "ro\x00ot", "root\u0085"):
            with pytest.raises(errors.TokenClaimsInvalid, match="'preferred_username'"):
                await rig.verifier.verify(issuer.mint("ES256", preferred_username=bad))
        ok = await rig.verifier.verify(issuer.mint("ES256", preferred_username="root"))
        assert ok.username == "root"


async def test_group_names_with_inner_spaces_and_unicode_are_kept(rig: Rig) -> None:
    ident = await rig.verifier.verify(rig.issuer.mint(
        "RS256", groups=["Domain Admins", "équipe-sré"], scp=["read", "User.Read"], scope=None))
    assert ident.groups == ("Domain Admins", "équipe-sré")
    assert ident.scopes == ("read", "User.Read")


# --- item 6: our own ACR from an IdP, auth_time in the future ----------------------------------

async def test_an_idp_token_asserting_our_webauthn_acr_is_refused(rig: Rig) -> None:
    now = int(rig.clock.wall())
    with pytest.raises(errors.TokenClaimsInvalid, match="reserved"):
        await rig.verifier.verify(rig.issuer.mint("RS256", acr=WEBAUTHN_ACR, auth_time=now))


@pytest.mark.parametrize("ahead", [31, 3600, 10**6])
async def test_an_auth_time_in_the_future_is_refused(rig: Rig, ahead: int) -> None:
    now = int(rig.clock.wall())
    with pytest.raises(errors.TokenClaimsInvalid, match="'auth_time' is in the future"):
        await rig.verifier.verify(rig.issuer.mint("RS256", acr="phr", auth_time=now + ahead))


async def test_an_auth_time_within_the_leeway_is_accepted_and_a_float_is_floored(rig: Rig) -> None:
    now = int(rig.clock.wall())
    ident = await rig.verifier.verify(rig.issuer.mint("RS256", acr="phr", auth_time=now + 30))
    assert ident.auth_time == now + 30
    ident = await rig.verifier.verify(rig.issuer.mint("RS256", acr="phr", auth_time=now - 9.75))
    assert ident.auth_time == now - 10


@pytest.mark.parametrize("value", ["yesterday", True, [1], {"t": 1}])
async def test_an_auth_time_that_is_not_a_number_is_refused(rig: Rig, value: object) -> None:
    with pytest.raises(errors.TokenClaimsInvalid, match="'auth_time'"):
        await rig.verifier.verify(rig.issuer.mint("RS256", auth_time=value))


STEPUP_DOCS: list[dict[str, Any]] = [
    {"id": "mfa", "match": {"paths": [{"prefix": "/mfa/"}]},
     "require": {"stepup": {"max_age": 300, "acr_values": [WEBAUTHN_ACR, "phr"]}}},
]


@pytest.fixture
async def stepup_authorizer(issuer: LocalIssuer) -> AsyncIterator[tuple[Authorizer, FakeClock]]:
    async with verifying(issuer, make_settings(issuer, default_action="deny")) as v:
        yield Authorizer(settings=v.settings, verifier=v.verifier,
                         policies=policy_snapshot(STEPUP_DOCS, v.clock), clock=v.clock), v.clock


def _view(path: str, token: str) -> RequestView:
    return request_view(path, token, headers={"accept": "application/json"})


async def test_step_up_is_not_satisfied_by_an_idp_token_claiming_our_acr(
    issuer: LocalIssuer, stepup_authorizer: tuple[Authorizer, FakeClock]
) -> None:
    authorizer, clock = stepup_authorizer
    now = int(clock.wall())
    d = await authorizer.check(_view("/mfa/x", issuer.mint("RS256", acr=WEBAUTHN_ACR, auth_time=now)))
    assert not d.allowed
    assert d.status == 401
    assert d.reason == "token_claims_invalid"
    # The IdP's own ACR still satisfies the policy (RFC 9470).
    assert (await authorizer.check(_view("/mfa/x", issuer.mint("RS256", acr="phr", auth_time=now)))
            ).allowed


async def test_step_up_with_an_auth_time_in_the_future_never_passes(
    issuer: LocalIssuer, stepup_authorizer: tuple[Authorizer, FakeClock]
) -> None:
    authorizer, clock = stepup_authorizer
    token = issuer.mint("RS256", acr="phr", auth_time=int(clock.wall()) + 86400)
    d = await authorizer.check(_view("/mfa/x", token))
    assert not d.allowed
    assert d.status == 401


# --- item 11: which keys of a JWKS may verify ---------------------------------------------------

def _rsa_jwk(bits: int, kid: str, **extra: Any) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns about the short keys made on purpose
        jwk = RSAKey.import_key(pem).as_dict(private=False)
    jwk.update(kid=kid, **extra)
    return private, jwk


def _signed_by(private: rsa.RSAPrivateKey, kid: str, issuer: LocalIssuer) -> str:
    return sign_raw(private, json.dumps({"alg": "RS256", "kid": kid}), json.dumps(issuer.claims()))


def test_rsa_keys_under_2048_bits_are_not_verification_keys() -> None:
    _, weak = _rsa_jwk(1024, "weak")
    _, weakish = _rsa_jwk(2040, "weakish")
    _, good = _rsa_jwk(2048, "good")
    assert [k.kid for k in parse_jwks({"keys": [weak, weakish, good]})] == ["good"]


@pytest.mark.parametrize(
    ("extra", "kept"),
    [({"key_ops": ["verify"]}, True), ({"key_ops": ["sign", "verify"]}, True),
     ({"key_ops": ["encrypt"]}, False), ({"key_ops": ["sign"]}, False), ({"key_ops": []}, False),
     ({"key_ops": "verify"}, False), ({"key_ops": [1]}, False),
     ({"key_ops": ["verify", "verify"]}, False),
     ({"use": "sig"}, True), ({"use": "enc"}, False), ({"use": "SIG"}, False), ({"use": 1}, False),
     ({"use": "sig", "key_ops": ["verify"]}, True), ({"use": "enc", "key_ops": ["verify"]}, False),
     ({"use": "sig", "key_ops": ["encrypt"]}, False)],
)
def test_key_ops_and_use_decide_whether_a_key_may_verify(extra: dict[str, Any], kept: bool) -> None:
    _, other = _rsa_jwk(2048, "other")
    _, candidate = _rsa_jwk(2048, "candidate", **extra)
    assert ("candidate" in [k.kid for k in parse_jwks({"keys": [other, candidate]})]) is kept


async def test_a_token_signed_with_a_weak_or_encryption_key_is_refused(issuer: LocalIssuer) -> None:
    weak_private, weak = _rsa_jwk(1024, "weak")
    enc_private, enc = _rsa_jwk(2048, "enc", key_ops=["encrypt", "wrapKey"])
    issuer.extra_jwks = [weak, enc]
    async with verifying(issuer) as rig:
        for private, kid in ((weak_private, "weak"), (enc_private, "enc")):
            with pytest.raises(errors.TokenKeyUnknown):
                await rig.verifier.verify(_signed_by(private, kid, issuer))


async def test_every_key_that_shares_a_kid_is_tried(issuer: LocalIssuer) -> None:
    first_private, first = _rsa_jwk(2048, "shared")
    second_private, second = _rsa_jwk(2048, "shared")
    ec_with_same_kid = dict(issuer.keys["ES256"].as_dict(private=False), kid="shared")
    issuer.extra_jwks = [first, ec_with_same_kid, second]
    async with verifying(issuer) as rig:
        for private in (first_private, second_private):
            assert (await rig.verifier.verify(_signed_by(private, "shared", issuer))).subject == "alice"
        stranger, _ = _rsa_jwk(2048, "shared")
        with pytest.raises(errors.TokenSignatureInvalid):
            await rig.verifier.verify(_signed_by(stranger, "shared", issuer))


# --- item 14: key rotation is not held back by a recent scheduled fetch ------------------------

async def test_a_key_published_right_after_the_start_fetch_is_accepted_at_once(rig: Rig) -> None:
    rig.issuer.rotate()
    fetches = rig.issuer.jwks_fetches
    ident = await rig.verifier.verify(rig.issuer.mint("ES256"))  # no time has passed
    assert ident.subject == "alice"
    assert rig.issuer.jwks_fetches == fetches + 1


async def test_a_key_published_right_after_a_scheduled_refresh_is_accepted_at_once(rig: Rig) -> None:
    rig.clock.advance(450)
    assert await rig.keys.refresh()  # what IssuerKeys.run does at 3/4 of the TTL
    rig.issuer.rotate()
    fetches = rig.issuer.jwks_fetches
    assert (await rig.verifier.verify(rig.issuer.mint("RS256"))).subject == "alice"
    assert rig.issuer.jwks_fetches == fetches + 1


async def test_callers_with_the_new_key_during_the_refetch_wait_for_it(rig: Rig) -> None:
    rig.issuer.rotate()
    rig.issuer.delay = 0.2
    fetches = rig.issuer.jwks_fetches
    tokens = [rig.issuer.mint("ES256", sub=f"user-{i}") for i in range(20)]
    idents = await asyncio.gather(*(rig.verifier.verify(t) for t in tokens))
    assert [i.subject for i in idents] == [f"user-{i}" for i in range(20)]
    assert rig.issuer.jwks_fetches == fetches + 1


async def test_random_kids_cost_at_most_one_fetch_per_cooldown_whatever_the_schedule(rig: Rig) -> None:
    cooldown = rig.settings.jwks.unknown_kid_cooldown
    fetches = rig.issuer.jwks_fetches
    unknown_fetches = 0
    for step in range(12):  # four cooldowns, in steps of a quarter
        if step % 3 == 0:
            assert await rig.keys.refresh()  # scheduled refreshes interleave; they do not count
            fetches += 1
        before = rig.issuer.jwks_fetches
        results = await asyncio.gather(
            *(rig.verifier.verify(rig.issuer.mint("ES256", kid=f"random-{step}-{i}"))
              for i in range(25)), return_exceptions=True)
        assert all(isinstance(r, errors.TokenKeyUnknown) for r in results)
        unknown_fetches += rig.issuer.jwks_fetches - before
        rig.clock.advance(cooldown / 4)
    assert unknown_fetches == 3
    assert rig.issuer.jwks_fetches == fetches + 3
