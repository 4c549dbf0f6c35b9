"""Revocations: cut off a token, a user, a client or everyone of an issuer, at once."""
