"""WebAuthn step-up: the signed step-up cookie, the passkey store, the ceremonies, the
pages under /.extauthz/, and the check-time requirement."""
