"""Settings for a service under test, built from the same document an operator writes."""

from __future__ import annotations

import tempfile
from typing import Any

from extauthz.config import Settings, settings_from_document
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port


def make_settings(*issuers: LocalIssuer, **overrides: Any) -> Settings:
    """Settings trusting these issuers (every algorithm they sign with), with a state file of
    their own and no admin listener; each override replaces a key, or is merged into it when
    both are mappings."""
    doc: dict[str, Any] = {
        "issuers": [
            {"issuer": i.issuer, "audiences": [AUDIENCE],
             "algorithms": ["RS256", "PS256", "ES256", "EdDSA"]}
            for i in issuers
        ],
        "default_action": "authenticated",
        "jwks": {"fetch_timeout": 2.0},
        "store": {"state_file": f"{tempfile.mkdtemp(prefix='extauthz-state-')}/state.json"},
        "admin": {"listen": None},  # in-process servers: no shared 127.0.0.1:9004 (pass one to test it)
        "check_http": {"listen": None},  # nor a shared 0.0.0.0:9003 (serving_settings gives a free port)
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    return settings_from_document(doc)


def serving_settings(*issuers: LocalIssuer, **overrides: Any) -> Settings:
    """``make_settings`` for an in-process server (tests.support.inproc.ServerThread): gRPC and
    HTTP listen on free loopback ports."""
    return make_settings(*issuers, grpc={"listen": f"127.0.0.1:{free_port()}"},
                         http={"listen": f"127.0.0.1:{free_port()}"},
                         **{**overrides, "check_http": {"listen": f"127.0.0.1:{free_port()}",
                                                        **overrides.get("check_http", {})}})
