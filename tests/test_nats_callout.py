"""The NATS auth callout end to end: a real nats-server (examples/nats/server.conf, the
README's block), a real extauthz worker as its callout, real nats-py clients with tokens
from the test issuer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from extauthz.revocation.model import Revocation
from tests.support.inproc import ServerThread
from tests.support.issuer import LocalIssuer
from tests.support.nats import CALLOUT_PASSWORD, NatsServer, nats_config
from tests.support.settings import serving_settings

POLICIES = """
id: orders-writer
priority: 10
require: {authenticated: true, claims: {groups: [orders]}}
nats:
  publish: {allow: ["orders.>"], deny: ["orders.admin.>"]}
  subscribe: {allow: ["orders.>", "_INBOX.>"]}
---
id: orders-reader
require: {authenticated: true, claims: {groups: [dev]}}
nats:
  subscribe: {allow: ["orders.>", "_INBOX.>"]}
---
id: banned
priority: 100
require: {authenticated: true, claims: {groups: [banned]}}
action: deny
nats: {}
---
id: http-everyone
match: {hosts: [api.example.com]}
require: {authenticated: true}
"""


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.stop()


def callout_settings(idp: LocalIssuer, server: NatsServer, tmp: Path, **nats: Any) -> Any:
    policies = tmp / "policies.yaml"
    if not policies.exists():
        policies.write_text(POLICIES)
    return serving_settings(idp, store={"url": f"file://{policies}", "poll_interval": 0.1},
                            audit={"stdout": False}, nats=nats_config(server, **nats))


@pytest.fixture(scope="module")
def worker(idp: LocalIssuer, nats_server: NatsServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(callout_settings(idp, nats_server, tmp_path_factory.mktemp("w"))).start()
    yield srv
    srv.stop()


async def connect(server: NatsServer, token: str | None = None, **options: Any) -> Any:
    if token is not None:
        options["token"] = token
    return await nats.connect(server.url, allow_reconnect=False, connect_timeout=2,
                              max_reconnect_attempts=0, **options)


async def attempt(server: NatsServer, **options: Any) -> tuple[Client | None, str]:
    """A connection, or None and the error of one the server refuses (its socket closed
    here: nats-py leaves it to the garbage collector)."""
    nc = Client()
    try:
        await nc.connect(server.url, allow_reconnect=False, connect_timeout=2,
                         max_reconnect_attempts=0, **options)
    except (NatsError, TimeoutError, OSError) as e:  # refused, or no answer in time
        with contextlib.suppress(Exception):
            await nc.close()
        if nc._transport is not None:
            nc._transport.close()
        return None, str(e)
    return nc, ""


async def refused(server: NatsServer, **options: Any) -> str:
    nc, error = await attempt(server, **options)
    if nc is not None:
        await nc.close()
        pytest.fail("the connection was accepted")
    return error


def writer_token(idp: LocalIssuer, **claims: Any) -> str:
    return idp.mint(**{"sub": "wendy", "groups": ["orders"], **claims})


async def test_a_writer_publishes_and_a_subscriber_receives(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    reader = await connect(nats_server, idp.mint(sub="rita", groups=["dev"]))
    writer = await connect(nats_server, writer_token(idp))
    try:
        sub = await reader.subscribe("orders.created")
        await reader.flush()
        # Published until one arrives (at most 5 tries, 1 s apart): in about one full-suite
        # run in ten the first message of a fresh server was not delivered, never reproduced
        # with the server's tracing on; what is asserted is that a writer's message arrives.
        for attempt in range(5):
            await writer.publish("orders.created", b"order %d" % attempt)
            await writer.flush()
            with contextlib.suppress(nats.errors.TimeoutError):
                msg = await sub.next_msg(timeout=1)
                break
        else:
            raise AssertionError("no message published by the writer reached the reader")
        assert msg.data.startswith(b"order ")
    finally:
        await reader.close()
        await writer.close()


async def test_a_readers_publish_is_a_permissions_violation_and_is_not_delivered(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    errors: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)

    reader = await connect(nats_server, idp.mint(sub="rita", groups=["dev"]), error_cb=on_error)
    watcher = await connect(nats_server, writer_token(idp))
    try:
        sub = await watcher.subscribe("orders.>")
        await watcher.flush()
        await reader.publish("orders.created", b"forged")
        await reader.flush()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.5)
        assert any("permissions violation" in str(e).lower() for e in errors)
    finally:
        await reader.close()
        await watcher.close()


async def test_a_writer_may_not_publish_where_its_policy_denies(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    writer = await connect(nats_server, writer_token(idp))
    watcher = await connect(nats_server, writer_token(idp))
    try:
        sub = await watcher.subscribe("orders.admin.>")
        await watcher.flush()
        await writer.publish("orders.admin.reset", b"no")
        await writer.flush()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.5)
    finally:
        await writer.close()
        await watcher.close()


@pytest.mark.parametrize("case", ["no policy met", "deny policy", "bad signature",
                                  "expired", "garbage", "no token", "other user",
                                  "wrong audience"])
async def test_a_connection_is_refused(case: str, idp: LocalIssuer, nats_server: NatsServer,
                                       worker: ServerThread) -> None:
    good = writer_token(idp)
    head, body, sig = good.split(".")
    options: dict[str, Any] = {
        # an HTTP policy every token meets never decides a NATS connection
        "no policy met": {"token": idp.mint(groups=["sales"])},
        "deny policy": {"token": idp.mint(groups=["banned", "orders"])},
        "bad signature": {"token": f"{head}.{body}.{sig[:-4]}AAAA"},
        "expired": {"token": idp.mint(exp=int(time.time()) - 120, iat=int(time.time()) - 600)},
        "garbage": {"token": "not-a-token"},
        "no token": {},
        "other user": {"user": "wendy", "password": good},
        "wrong audience": {"token": idp.mint(aud="someone-else")},
    }[case]
    assert "Authorization Violation" in await refused(nats_server, **options)


async def test_the_token_may_come_as_the_password_of_user_bearer(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    nc = await connect(nats_server, user="bearer", password=writer_token(idp))
    await nc.close()


async def test_a_revoked_subject_is_refused_within_a_second(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    token = idp.mint(sub="mallory", groups=["orders"], iat=int(time.time()) - 5)
    nc = await connect(nats_server, token)
    await nc.close()
    assert worker.engine is not None
    await worker.engine.revocation_store.add(
        Revocation("subject", "mallory", "", int(time.time()), None))
    started = time.monotonic()
    while True:
        nc, _ = await attempt(nats_server, token=token)
        if nc is None:
            break
        await nc.close()
        assert time.monotonic() - started < 1.0, "still connecting a second after the revocation"
        await asyncio.sleep(0.05)


async def test_a_token_expiring_in_seconds_ends_the_connection(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await connect(nats_server, idp.mint(groups=["orders"], exp=int(time.time()) + 2),
                       closed_cb=on_closed)
    assert nc.is_connected
    await asyncio.wait_for(closed.wait(), 5)
    assert not nc.is_connected
    await nc.close()
    if nc._transport is not None:  # nats-py leaves a closed connection's socket to the gc
        nc._transport.close()


async def test_the_callout_user_connects_with_its_password_only(nats_server: NatsServer) -> None:
    assert "Authorization Violation" in await refused(nats_server, user="auth", password="wrong")
    nc = await connect(nats_server, user="auth", password=CALLOUT_PASSWORD)
    await nc.close()


async def test_a_revoked_subjects_live_connection_is_ended_within_a_second(
        idp: LocalIssuer, nats_server: NatsServer, worker: ServerThread) -> None:
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    token = idp.mint(sub="eve", groups=["orders"], iat=int(time.time()) - 5)
    nc = await connect(nats_server, token, closed_cb=on_closed)
    other = await connect(nats_server, writer_token(idp))  # another subject stays
    try:
        assert worker.engine is not None
        await worker.engine.revocation_store.add(
            Revocation("subject", "eve", "", int(time.time()), None))
        started = time.monotonic()
        await asyncio.wait_for(closed.wait(), 3)
        assert time.monotonic() - started < 1.0
        assert other.is_connected
    finally:
        await nc.close()
        if nc._transport is not None:  # nats-py leaves a closed connection's socket to the gc
            nc._transport.close()
        await other.close()
