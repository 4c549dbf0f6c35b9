from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from extauthz.config import Settings, settings_from_document
from tests.support.issuer import AUDIENCE, LocalIssuer


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    idp = LocalIssuer()
    try:
        yield idp
    finally:
        idp.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIssuer]:
    """One issuer for a whole test module (tests that rotate or stop it use ``issuer``)."""
    issuer = LocalIssuer()
    yield issuer
    issuer.close()


def make_settings(*issuers: LocalIssuer, **overrides: Any) -> Settings:
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
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    return settings_from_document(doc)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.support.redis import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
