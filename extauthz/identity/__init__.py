"""Identity: find the caller's token, verify it against the issuer's cached keys."""
