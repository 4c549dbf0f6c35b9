"""Past one Redis (issue 17): ``store.url: redis+sentinel://…``. The URL is read like a
``redis://`` one (password, DB, TLS), every Redis client is made from it the same way, and
a real failover (a master, its replica and a sentinel; the master SIGKILLed) keeps every
worker deciding from its snapshot while the replica is promoted, and brings the writes made
after it to every worker."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config.settings import settings_from_document
from extauthz.errors import ConfigError
from extauthz.policy.store import RedisPolicyStore, open_store
from extauthz.revocation.store import RedisRevocationStore, open_revocation_store
from extauthz.stepup.store import RedisStepupStore, open_stepup_store
from extauthz.store.redis_client import SentinelRedis, parse_sentinel_url, redis_client
from extauthz.store.redis_hash import redacted_url
from extauthz.store.redis_safety import check_redis
from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.ports import free_port
from tests.support.sentinel import SentinelGroup
from tests.support.stack import ExtAuthz
from tests.support.workers import Worker, all_answer, one_per_worker

ADMIN = {"id": "admin", "match": {"paths": [{"prefix": "/admin/"}]},
         "require": {"claims": {"groups": ["sre"]}}}


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_masters_options() -> None:
    t = parse_sentinel_url("redis+sentinel://:p%40ss@h1:26380,h2,[::1]:26381/mymaster/3"
                           "?sentinel_password=sp")
    assert t.sentinels == (("h1", 26380), ("h2", 26379), ("::1", 26381))
    assert t.service == "mymaster"
    assert not t.tls
    assert t.master == {"password": "p@ss", "db": 3}  # as redis://:p%40ss@…/3 would say
    assert t.sentinel == {"password": "sp"}
    assert parse_sentinel_url("redis+sentinel://h/m").master == {"db": 0}


def test_rediss_sentinel_speaks_tls_to_the_sentinels_and_the_master() -> None:
    t = parse_sentinel_url("rediss+sentinel://u:pw@h:26379/m?ssl_ca_certs=/etc/ca.pem")
    assert t.tls
    assert t.master == {"username": "u", "password": "pw", "db": 0, "ssl_ca_certs": "/etc/ca.pem"}
    assert t.sentinel == {"ssl": True, "ssl_ca_certs": "/etc/ca.pem"}


@pytest.mark.parametrize(("url", "why"), [
    ("redis+sentinel://:pw@h1:26379", "names no SERVICE"),
    ("redis+sentinel://:pw@h1:26379/", "names no SERVICE"),
    ("redis+sentinel://:pw@/mymaster", "names no sentinel"),
    ("redis+sentinel://:pw@h1:26379/mymaster/zero", "where the DB number belongs"),
    ("redis+sentinel://:pw@h1:port/mymaster", "where a sentinel's HOST:PORT belongs"),
    ("redis+sentinel://:pw@h1:70000/mymaster", "has the port 70000"),
])
def test_a_malformed_sentinel_url_is_refused_without_its_password(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        redis_client(url, 1.0)
    assert why in e.value.message
    assert "pw" not in e.value.message.replace("PASSWORD", "")
    assert "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT]/SERVICE[/DB]" in e.value.message


def test_no_password_of_a_sentinel_url_reaches_a_log() -> None:
    assert (redacted_url("redis+sentinel://:s3cret@h1:26379,h2:26379/m/0?sentinel_password=x")
            == "redis+sentinel://:***@h1:26379,h2:26379/m/0?sentinel_password=***")


async def test_every_store_opens_a_sentinel_url_as_redis(tmp_path: Path) -> None:
    url = "redis+sentinel://127.0.0.1:1/mymaster"
    stepup = open_stepup_store(url, "p:", 1, str(tmp_path / "s.json"), SYSTEM_CLOCK)
    stores = [open_store(url, "p:", 1), open_revocation_store(url, "p:", 1, stepup, SYSTEM_CLOCK)]
    assert isinstance(stepup, RedisStepupStore)
    assert isinstance(stores[0], RedisPolicyStore)
    assert isinstance(stores[1], RedisRevocationStore)
    assert isinstance(stores[1].client, SentinelRedis)
    for s in (*stores, stepup):
        assert s is not None
        await s.close()


def test_the_config_takes_sentinel_urls_for_the_store_and_the_audit_stream() -> None:
    settings = settings_from_document({
        "store": {"url": "redis+sentinel://h1,h2/mymaster"},
        "audit": {"redis_stream": True, "redis_url": "rediss+sentinel://h3:26379/audit/1"}})
    assert settings.store.url == "redis+sentinel://h1,h2/mymaster"


def test_every_redis_client_is_made_by_the_one_factory() -> None:
    """So every part follows a failover: nothing else opens a Redis connection its own way."""
    package = Path(__file__).resolve().parents[1] / "extauthz"
    factory = package / "store" / "redis_client.py"
    own_way = [f"{path.relative_to(package)}:{n}" for path in sorted(package.rglob("*.py"))
               if path != factory
               for n, line in enumerate(path.read_text().splitlines(), 1)
               if re.search(r"\bfrom_url\(|\bSentinel\(|\bRedis\(|ConnectionPool\(", line)]
    assert own_way == []


def test_a_sentinel_failover_keeps_every_worker_deciding_and_later_writes_reach_them_all(
    tmp_path: Path,
) -> None:
    idp = LocalIssuer()
    group = SentinelGroup(tmp_path / "redis")
    issuers = [{"issuer": idp.issuer, "audiences": [AUDIENCE]}]
    store = {"url": group.url, "prefix": "ha:", "poll_interval": 0.5, "require_safe_redis": True}
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"store": store, "issuers": issuers}))
    service = ExtAuthz(tmp_path, {"issuers": issuers, "store": store,
                                  "default_action": "authenticated"}, args=["--workers", "2"])
    workers: list[Worker] = []
    try:
        group.start()
        alice = idp.mint("ES256", sub="alice", groups=["sre"])
        bob = idp.mint("ES256", sub="bob", groups=["dev"])
        mallory = idp.mint("ES256", sub="mallory", groups=["sre"])
        applied = run_cli(config, "policy", "apply", "-f", "-", stdin=yaml.safe_dump(ADMIN))
        assert applied.returncode == 0, applied.stderr
        assert run_cli(config, "revoke", "subject", "--subject", "mallory").returncode == 0
        group.in_sync()
        service.start()  # require_safe_redis: the master's settings read through the sentinel
        workers = one_per_worker(service.grpc_port, 2, token=alice)

        def enforced() -> None:
            for w in workers:
                assert w.status(mallory) == 401  # revoked
                assert w.status(bob, path="/admin/users") == 403  # not sre
                assert w.status(alice, path="/admin/users") == 200

        enforced()
        killed = time.monotonic()
        group.kill_master()
        rounds = 0
        while not group.promoted():  # every answer during the promotion is from the snapshot
            enforced()
            rounds += 1
            assert time.monotonic() - killed < 15, "the sentinel did not promote the replica"
        gap = time.monotonic() - killed
        print(f"\nfailover: the replica was promoted {gap:.2f}s after the master died; "
              f"{rounds * 6} checks answered from the snapshot meanwhile")
        assert rounds > 0

        # A write after the failover, by the CLI on the same URL, reaches every worker.
        revoked = run_cli(config, "revoke", "subject", "--subject", "bob")
        assert revoked.returncode == 0, revoked.stderr
        written = time.monotonic()
        took = all_answer(workers, 401, 10, bob, path="/")
        print(f"failover: a revocation written after it was enforced by every worker "
              f"{took:.2f}s later ({written - killed:.2f}s after the master died)")
        for w in workers:  # and what held before the failover still holds
            assert w.status(mallory) == 401
            assert w.status(alice, path="/admin/users") == 200
        status = run_cli(config, "store", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "redis: ok" in status.stdout
        until(lambda: b"REFUSING" not in service.admin("/readyz").body, 5)
        assert service.admin("/readyz").status == 200
    finally:
        for w in workers:
            w.channel.close()
        service.stop()
        group.stop()
        idp.close()


def test_require_safe_redis_refuses_an_unsafe_master_named_by_the_sentinels(
    tmp_path: Path,
) -> None:
    group = SentinelGroup(tmp_path / "redis", extra=("--maxmemory-policy", "allkeys-lru"))
    config = tmp_path / "serve.yaml"
    try:
        group.start()
        config.write_text(yaml.safe_dump({
            "store": {"url": group.url, "require_safe_redis": True,
                      "state_file": str(tmp_path / "state.json")},
            "grpc": {"listen": f"127.0.0.1:{free_port()}"},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "admin": {"listen": None}, "check_http": {"listen": None}}))
        started = run_cli(config, "serve")
        assert started.returncode == 2, started.stderr
        assert "store.require_safe_redis" in started.stderr
        assert "maxmemory-policy is 'allkeys-lru'" in started.stderr
        assert group.password not in started.stderr
    finally:
        group.stop()


async def test_redis_safety_is_checked_through_a_sentinel(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path / "redis")
    try:
        group.start()
        client = redis_client(group.url, 2.0)
        try:
            safety = await check_redis(client, "redis sentinel")
        finally:
            await client.aclose()
        assert safety.safe, safety.detail
    finally:
        group.stop()


@pytest.mark.parametrize(("url", "redacted"), [
    ("redis://:pa/ss@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://:p?ss@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://:p#ss@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://:a@b@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://S3cret@h:6379/0", "redis://***@h:6379/0"),
    ("redis://u:S3cret@h:6379/0", "redis://u:***@h:6379/0"),
    ("redis://h:6379/0?%70assword=S3cret", "redis://h:6379/0?%70assword=***"),
    ("rediss://h/0?ssl_password=S3cret&ssl_ca_certs=/ca.pem",
     "rediss://h/0?ssl_password=***&ssl_ca_certs=/ca.pem"),
    ("redis://h/0?auth_token=S3cret&x_secret=S3cret&Pwd=S3cret",
     "redis://h/0?auth_token=***&x_secret=***&Pwd=***"),
    ("redis+sentinel://:pa/ss@h1,h2/m?sentinel_password=S3cret",
     "redis+sentinel://:***@h1,h2/m?sentinel_password=***"),
])
def test_redacted_url_hides_every_password_however_it_is_written(url: str, redacted: str) -> None:
    assert redacted_url(url) == redacted


ODD_URLS = [
    ("redis+sentinel://:pa/ss@127.0.0.1:1/mymaster", "percent-encode them in the password"),
    ("redis+sentinel://:p#ss@127.0.0.1:1/mymaster", "percent-encode them in the password"),
    ("redis+sentinel://:p?ss@127.0.0.1:1/mymaster", "percent-encode them in the password"),
    ("redis+sentinel://127.0.0.1:1/mymaster?ssl_password=S3cret",
     "has the TLS option 'ssl_password' but does not use TLS"),
    ("redis+sentinel://127.0.0.1:1/mymaster?socket_timeout=abc",
     "has a socket_timeout that is not a number"),
    ("redis+sentinel://127.0.0.1:1/mymaster?pasword=S3cret", "has the unknown option 'pasword'"),
    ("redis+sentinel://127.0.0.1:1/mymaster?%70assword=S3cret&password=S3cret",
     "gives 'password' twice"),
    ("redis://:pa/ss@127.0.0.1:1/0", "percent-encode them in the password"),
    ("redis://:p#ss@127.0.0.1:1/0", "percent-encode them in the password"),
    ("redis://127.0.0.1:1/0?socket_timeout=abc", "has a socket_timeout that is not a number"),
    ("redis://127.0.0.1:1/0?ssl_password=S3cret", "does not use TLS"),
]


@pytest.mark.parametrize(("url", "why"), ODD_URLS)
def test_an_odd_redis_url_is_refused_by_the_client_factory_without_its_secret(
    url: str, why: str,
) -> None:
    with pytest.raises(ConfigError) as e:
        redis_client(url, 1.0)
    assert why in e.value.message
    for secret in ("S3cret", "pa/ss", "p#ss", "p?ss", "ss@"):
        assert secret not in e.value.message


@pytest.mark.parametrize("command", [("policy", "list"), ("serve",)])
@pytest.mark.parametrize(("url", "why"), ODD_URLS[:5] + ODD_URLS[7:8])
def test_the_cli_refuses_an_odd_redis_url_in_one_line_without_its_secret(
    tmp_path: Path, url: str, why: str, command: tuple[str, ...],
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": url,
                                                "state_file": str(tmp_path / "s.json")},
                                      "log_format": "text"}))
    result = run_cli(config, *command, timeout=30)
    stderr = result.stderr
    assert result.returncode == 2, result.stdout + stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert why in stderr
    for secret in ("S3cret", "pa/ss", "p#ss", "p?ss", "ss@"):
        assert secret not in stderr + result.stdout


def test_a_password_with_an_at_sign_still_reaches_the_master() -> None:
    t = parse_sentinel_url("redis+sentinel://:a@b@h1/mymaster?socket_timeout=0.5")
    assert t.master == {"password": "a@b", "db": 0, "socket_timeout": 0.5}
    t = parse_sentinel_url("rediss+sentinel://h1/m?ssl_password=k%26y")
    assert t.master == {"db": 0, "ssl_password": "k&y"}
    assert t.sentinel == {"ssl": True, "ssl_password": "k&y"}
