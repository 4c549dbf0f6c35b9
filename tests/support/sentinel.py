"""A Redis master, its replica and one sentinel watching them: real redis-server processes on
free loopback ports, started and stopped by the tests, to fail over for real."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.poll import until
from tests.support.ports import free_port, wait_for_port
from tests.support.redis import RedisServer
from tests.support.terminate import terminate

SERVICE = "mymaster"


class SentinelGroup:
    """``start()``: a master, a replica of it (``--replicaof``), then a sentinel that knows
    both; ``kill_master()`` is a SIGKILL; ``stop()`` stops whatever still runs."""

    def __init__(self, workdir: Path, password: str = "s3cret-pw",  # noqa: S107 (a test's)
                 down_after_ms: int = 500, failover_timeout_ms: int = 2000,
                 extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.password = password
        auth = [*extra, "--requirepass", password, "--masterauth", password,
                "--repl-diskless-sync-delay", "0"]  # a replica syncs now, not in 5 s
        self.master = RedisServer(workdir / "master", extra=list(auth))
        self.replica = RedisServer(workdir / "replica", extra=list(auth))
        self.port = free_port()
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The store URL: the sentinel, the service, DB 0, the data nodes' password."""
        return f"redis+sentinel://:{self.password}@127.0.0.1:{self.port}/{SERVICE}/0"

    def node(self, server: RedisServer) -> redis.Redis:
        return redis.Redis(port=server.port, password=self.password, decode_responses=True,
                           socket_timeout=2)

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def master_port(self) -> int:
        """The master's port as the sentinel says it."""
        _, port = self.sentinel().sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.extra = [*self.replica.extra, "--replicaof", "127.0.0.1",
                              str(self.master.port)]
        self.replica.start()
        until(lambda: self.node(self.replica).info("replication")["master_link_status"] == "up",
              10, what="the replica did not sync with the master")
        conf = self.workdir / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", "protected-mode no",
            f"dir {self.workdir}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1",
            f"sentinel auth-pass {SERVICE} {self.password}",
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {SERVICE} 1", ""]))
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen([binary, str(conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=10)
        until(lambda: len(self.sentinel().sentinel_slaves(SERVICE)) == 1, 15,
              what="the sentinel did not find the replica")
        return self

    def in_sync(self) -> None:
        """Every write so far is on the replica (so a failover loses none)."""
        assert self.node(self.master).wait(1, 5000) == 1

    def kill_master(self) -> None:
        self.master.kill()

    def promoted(self) -> bool:
        """The sentinel names the replica the master, and the replica took the role."""
        with contextlib.suppress(redis.RedisError):
            return (self.master_port() == self.replica.port
                    and self.node(self.replica).info("replication")["role"] == "master")
        return False

    def stop(self) -> None:
        terminate(self.proc)
        self.replica.stop()
        self.master.stop()
