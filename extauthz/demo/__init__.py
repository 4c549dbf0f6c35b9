"""The demo: a built-in issuer, an echo upstream, and the launcher behind ``make demo``."""
