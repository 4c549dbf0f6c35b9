"""extauthz: external authorization for Envoy and Istio."""

__version__ = "0.1.0"
