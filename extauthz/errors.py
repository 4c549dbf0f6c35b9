"""One exception tree for the whole service, each class with a stable ``code``.

The code is machine-readable: it is the ``reason`` of a Decision, the label of a
metric and the ``error`` field of a JSON denial body, so it never changes once
released. Messages are for people and never contain token contents or keys.
"""

from __future__ import annotations


class ExtAuthzError(Exception):
    """Base of every error this project raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ExtAuthzError):
    """The configuration is invalid; the message names the key and the fix."""

    code = "config_invalid"


class TokenError(ExtAuthzError):
    """A presented token cannot be accepted (RFC 6750 ``invalid_token``)."""

    code = "invalid_token"


class TokenMalformed(TokenError):
    code = "token_malformed"


class TokenTooLarge(TokenError):
    code = "token_too_large"


class TokenExpired(TokenError):
    code = "token_expired"


class TokenNotYetValid(TokenError):
    code = "token_not_yet_valid"


class TokenIssuerUnknown(TokenError):
    code = "token_issuer_unknown"


class TokenAudienceInvalid(TokenError):
    code = "token_audience_invalid"


class TokenAlgorithmRejected(TokenError):
    code = "token_algorithm_rejected"


class TokenSignatureInvalid(TokenError):
    code = "token_signature_invalid"


class TokenKeyUnknown(TokenError):
    code = "token_key_unknown"


class TokenClaimsInvalid(TokenError):
    code = "token_claims_invalid"


class TokenRevoked(TokenError):
    code = "token_revoked"


class KeysUnavailable(ExtAuthzError):
    """No signing keys could be obtained for a trusted issuer (IdP unreachable)."""

    code = "keys_unavailable"


class JWKSFetchError(ExtAuthzError):
    """A JWKS or discovery document could not be fetched or parsed."""

    code = "jwks_fetch_failed"


class PolicyInvalid(ConfigError):
    """A policy document is invalid; the message names the field and the fix."""

    code = "policy_invalid"


class PolicyNotFound(ExtAuthzError):
    code = "policy_not_found"


class StoreUnavailable(ExtAuthzError):
    """The policy store (Redis, a file) cannot be read or written right now."""

    code = "store_unavailable"


class BadRequest(ExtAuthzError):
    """The request itself is ambiguous or malformed (400 ``bad_request``): its meaning would
    depend on who decodes it, so it is refused rather than resolved into a guess."""

    code = "bad_request"


class CredentialAmbiguous(TokenError):
    """A credential cookie appears more than once: which one the upstream would read is a
    guess, so neither is used."""

    code = "credential_ambiguous"
