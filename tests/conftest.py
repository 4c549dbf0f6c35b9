from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.settings import make_settings as make_settings  # test_engine.py imports it here


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One redis-server for the session; tests keep apart by key prefix."""
    from tests.support.redis import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of the test's own, for a test that fills it from several processes,
    restarts what uses it, or reads it back whole."""
    from tests.support.redis import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
