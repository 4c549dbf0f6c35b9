"""Token verification against a real issuer on loopback; tokens minted by joserfc."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from extauthz import errors
from extauthz.config import settings_from_document
from extauthz.identity.jwks import HttpFetcher, IssuerKeys, ttl_from_cache_control
from tests.support.clock import FakeClock
from tests.support.issuer import LocalIssuer, b64
from tests.support.ports import free_port
from tests.support.verifying import Verifying as Rig
from tests.support.verifying import verifying


@pytest.fixture
async def rig(issuer: LocalIssuer) -> AsyncIterator[Rig]:
    async with verifying(issuer) as rig:
        yield rig


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
async def test_a_valid_token_yields_its_identity(rig: Rig, alg: str) -> None:
    ident = await rig.verifier.verify(rig.issuer.mint(alg))
    assert ident.subject == "alice"
    assert ident.issuer == rig.issuer.issuer
    assert ident.username == "alice"
    assert ident.email == "alice@example.com"
    assert ident.groups == ("sre", "dev")
    assert ident.scopes == ("read", "write")
    assert ident.client_id == "cli"


async def test_a_repeat_token_is_served_from_the_cache(rig: Rig) -> None:
    token = rig.issuer.mint("ES256")
    await rig.verifier.verify(token)
    await rig.verifier.verify(token)
    assert (rig.verifier.cache_misses, rig.verifier.cache_hits) == (1, 1)


async def test_a_cached_token_is_refused_once_it_expires(rig: Rig) -> None:
    token = rig.issuer.mint("ES256", exp=int(rig.clock.wall()) + 60)
    await rig.verifier.verify(token)
    rig.clock.advance(60 + rig.settings.token.leeway + 1)
    with pytest.raises(errors.TokenExpired):
        await rig.verifier.verify(token)


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({"exp_delta": -120}, errors.TokenExpired, "token expired"),
        ({"nbf_delta": 300}, errors.TokenNotYetValid, "not valid yet"),
        ({"iat_delta": 300}, errors.TokenNotYetValid, "issued in the future"),
        ({"aud": "someone-else"}, errors.TokenAudienceInvalid, "audience"),
        ({"aud": ["x", "y"]}, errors.TokenAudienceInvalid, "audience"),
        ({"iss": "https://evil.example.com"}, errors.TokenIssuerUnknown, "not trusted"),
        ({"exp": None}, errors.TokenClaimsInvalid, "no 'exp'"),
        ({"sub": None}, errors.TokenClaimsInvalid, "no 'sub'"),
        ({"exp": "tomorrow"}, errors.TokenClaimsInvalid, "'exp' is not a number"),
        ({"groups": [1, 2]}, errors.TokenClaimsInvalid, "'groups'"),
    ],
)
async def test_bad_claims_are_refused_with_a_named_reason(
    rig: Rig, claims: dict[str, object], error: type[Exception], description: str
) -> None:
    now = int(rig.clock.wall())
    for name in ("exp", "nbf", "iat"):
        delta = claims.pop(f"{name}_delta", None)
        if delta is not None:
            claims[name] = now + int(delta)  # type: ignore[call-overload]
    with pytest.raises(error) as err:
        await rig.verifier.verify(rig.issuer.mint("RS256", **claims))
    assert description in str(err.value)


async def test_expiry_within_the_leeway_is_accepted(rig: Rig) -> None:
    now = int(rig.clock.wall())
    ident = await rig.verifier.verify(rig.issuer.mint("RS256", exp=now - 10))
    assert ident.subject == "alice"


async def test_an_audience_list_with_one_accepted_entry_passes(rig: Rig) -> None:
    ident = await rig.verifier.verify(rig.issuer.mint("RS256", aud=["other", "my-api"]))
    assert ident.subject == "alice"


async def test_a_trailing_slash_issuer_is_a_different_issuer(rig: Rig) -> None:
    with pytest.raises(errors.TokenIssuerUnknown):
        await rig.verifier.verify(rig.issuer.mint("RS256", iss=rig.issuer.issuer + "/"))


async def test_alg_none_is_refused(rig: Rig) -> None:
    with pytest.raises(errors.TokenAlgorithmRejected):
        await rig.verifier.verify(rig.issuer.mint_unsigned())


async def test_hs256_signed_with_the_rsa_public_key_is_refused(rig: Rig) -> None:
    with pytest.raises(errors.TokenAlgorithmRejected):
        await rig.verifier.verify(rig.issuer.mint_hs256_with_public_key())


async def test_an_algorithm_not_configured_for_the_issuer_is_refused(issuer: LocalIssuer) -> None:
    async with verifying(issuer, algorithms=("ES256",)) as only_es:
        with pytest.raises(errors.TokenAlgorithmRejected):
            await only_es.verifier.verify(issuer.mint("RS256"))


async def test_a_key_of_the_wrong_type_for_the_algorithm_is_not_used(rig: Rig) -> None:
    # ES256 header, but the kid names the RSA key: no key may verify it.
    with pytest.raises(errors.TokenKeyUnknown):
        await rig.verifier.verify(rig.issuer.mint("ES256", kid=rig.issuer.keys["RS256"].kid))


async def test_a_tampered_payload_fails_the_signature(rig: Rig) -> None:
    head, _, sig = rig.issuer.mint("ES256").split(".")
    other = rig.issuer.mint("ES256", sub="admin").split(".")[1]
    with pytest.raises(errors.TokenSignatureInvalid):
        await rig.verifier.verify(f"{head}.{other}.{sig}")


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d.e", "!!!.???.***", "eyJhbGciOiJSUzI1NiJ9.e30.", "e30.e30.e30",
     "W10.e30.AAAA", "eyJhbGciOjF9.e30.AAAA", "ünïcödé.ü.ü", "a" * 100 + "." * 2],
)
async def test_garbage_tokens_are_refused_as_malformed(rig: Rig, token: str) -> None:
    with pytest.raises(errors.TokenError):
        await rig.verifier.verify(token)


async def test_an_oversized_token_is_refused_before_parsing(rig: Rig) -> None:
    token = rig.issuer.mint("RS256", padding="x" * 20000)
    with pytest.raises(errors.TokenTooLarge):
        await rig.verifier.verify(token)


async def test_critical_header_extensions_are_refused(rig: Rig) -> None:
    _, body, sig = rig.issuer.mint("ES256").split(".")
    header = b64(json.dumps({"alg": "ES256", "crit": ["x-ext"], "x-ext": 1}).encode())
    token = f"{header}.{body}.{sig}"
    with pytest.raises(errors.TokenMalformed, match="critical"):
        await rig.verifier.verify(token)


async def test_after_rotation_a_new_kid_is_accepted_after_one_refetch(rig: Rig) -> None:
    await rig.verifier.verify(rig.issuer.mint("ES256"))
    rig.issuer.rotate()
    fetches = rig.issuer.jwks_fetches
    rig.clock.advance(rig.settings.jwks.unknown_kid_cooldown)
    ident = await rig.verifier.verify(rig.issuer.mint("ES256"))
    assert ident.subject == "alice"
    assert rig.issuer.jwks_fetches == fetches + 1


async def test_a_flood_of_unknown_kids_refetches_at_most_once_per_cooldown(rig: Rig) -> None:
    rig.clock.advance(rig.settings.jwks.unknown_kid_cooldown)
    fetches = rig.issuer.jwks_fetches
    tokens = [rig.issuer.mint("ES256", kid=f"random-{i}") for i in range(50)]
    results = await asyncio.gather(*(rig.verifier.verify(t) for t in tokens),
                                   return_exceptions=True)
    assert all(isinstance(r, errors.TokenKeyUnknown) for r in results)
    assert rig.issuer.jwks_fetches == fetches + 1
    rig.clock.advance(rig.settings.jwks.unknown_kid_cooldown - 1)
    with pytest.raises(errors.TokenKeyUnknown):
        await rig.verifier.verify(rig.issuer.mint("ES256", kid="again"))
    assert rig.issuer.jwks_fetches == fetches + 1


async def test_when_the_idp_is_down_cached_keys_keep_working(rig: Rig) -> None:
    rig.issuer.down = True
    assert not await rig.keys.refresh()
    rig.clock.advance(3600)
    now = int(rig.clock.wall())
    ident = await rig.verifier.verify(rig.issuer.mint("RS256", iat=now, exp=now + 600))
    assert ident.subject == "alice"
    assert rig.keys.loaded
    assert rig.keys.failures == 1


async def test_with_no_keys_ever_loaded_verification_is_unavailable(issuer: LocalIssuer) -> None:
    issuer.down = True
    async with verifying(issuer, load=False) as rig:
        with pytest.raises(errors.KeysUnavailable):
            await rig.verifier.verify(issuer.mint("RS256"))
        before = len(issuer.requests)
        for _ in range(20):  # no hammering: within the retry gate nothing is fetched
            with pytest.raises(errors.KeysUnavailable):
                await rig.verifier.verify(issuer.mint("RS256"))
        assert len(issuer.requests) == before


async def refresh_error(issuer: LocalIssuer, **issuer_fields: Any) -> str:
    """Why the first fetch of ``issuer``'s keys failed (it must fail)."""
    async with verifying(issuer, load=False, **issuer_fields) as rig:
        assert not await rig.keys.refresh()
        assert rig.keys.last_error is not None
        return rig.keys.last_error


async def test_discovery_must_name_the_configured_issuer_exactly(issuer: LocalIssuer) -> None:
    issuer.discovery_issuer = issuer.issuer + "/"
    assert "must match exactly" in await refresh_error(issuer)


async def test_a_local_http_issuer_may_not_send_key_fetches_over_http_to_another_host(
    issuer: LocalIssuer,
) -> None:
    issuer.discovery_jwks_uri = "http://keys.example.net/jwks"  # refused before any fetch
    assert "plain-http jwks_uri on another host" in await refresh_error(issuer)


async def test_concurrent_refreshes_share_one_fetch(rig: Rig) -> None:
    before = rig.issuer.jwks_fetches
    assert all(await asyncio.gather(*(rig.keys.refresh() for _ in range(20))))
    assert rig.issuer.jwks_fetches == before + 1


async def test_the_jwks_ttl_follows_cache_control(issuer: LocalIssuer) -> None:
    issuer.cache_control = "public, max-age=7200"
    async with verifying(issuer) as rig:
        assert rig.keys.ttl == 7200


@pytest.mark.parametrize(
    ("header", "ttl"),
    [(None, 600), ("max-age=5", 60), ("max-age=999999", 86400), ("no-store", 60),
     ("public, max-age=3600, must-revalidate", 3600), ("garbage", 600)],
)
def test_cache_control_is_clamped_to_a_minute_and_a_day(header: str | None, ttl: int) -> None:
    assert ttl_from_cache_control(header, 600) == ttl


async def test_kubernetes_style_username_and_groups_prefixes(issuer: LocalIssuer) -> None:
    async with verifying(issuer, username_claim="email", username_prefix="authgate:",
                         groups_prefix="authgate:") as rig:
        ident = await rig.verifier.verify(issuer.mint("ES256"))
        assert ident.username == "authgate:alice@example.com"
        assert ident.groups == ("authgate:sre", "authgate:dev")
        with pytest.raises(errors.TokenClaimsInvalid, match="not verified"):
            await rig.verifier.verify(issuer.mint("ES256", email_verified=False))


async def test_an_unverified_email_is_not_passed_on(rig: Rig) -> None:
    assert (await rig.verifier.verify(rig.issuer.mint("ES256", email_verified=False))).email is None
    assert (await rig.verifier.verify(rig.issuer.mint("ES256"))).email == "alice@example.com"


async def test_a_group_with_a_comma_is_refused(rig: Rig) -> None:
    with pytest.raises(errors.TokenClaimsInvalid, match="comma"):
        await rig.verifier.verify(rig.issuer.mint("ES256", groups=["dev", "a,sre"]))


# --- fetching the keys ------------------------------------------------------------------------

class _Slow(BaseHTTPRequestHandler):
    """A JWKS endpoint that sends its body in two pieces, or redirects."""

    jwks: dict[str, Any] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "/jwks")
            self.end_headers()
            return
        data = json.dumps(self.jwks).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        half = len(data) // 2
        self.wfile.write(data[:half])
        self.wfile.flush()
        time.sleep(0.2)
        self.wfile.write(data[half:])


@pytest.fixture
def slow_jwks(issuer: LocalIssuer) -> Iterator[str]:
    _Slow.jwks = issuer.jwks()
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Slow)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


async def test_a_jwks_sent_in_pieces_is_read_whole(issuer: LocalIssuer, slow_jwks: str) -> None:
    async with verifying(issuer, fetch_timeout=5.0, jwks_uri=f"{slow_jwks}/jwks") as rig:
        assert rig.keys.loaded


async def test_jwks_redirects_are_not_followed(issuer: LocalIssuer, slow_jwks: str) -> None:
    assert "HTTP 302" in await refresh_error(issuer, jwks_uri=f"{slow_jwks}/redirect")


async def test_an_https_issuer_may_not_publish_its_keys_over_http() -> None:
    settings = settings_from_document({"issuers": [{"issuer": "https://idp.example", "audiences": ["a"]}]})
    keys = IssuerKeys(settings.issuers[0], settings.jwks, HttpFetcher(1.0), FakeClock())
    assert keys._schemes == ("https://",)
