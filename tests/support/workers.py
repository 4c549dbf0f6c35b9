"""Talking to each worker of a ``serve --workers N`` on its own: a worker is told apart by the
prefix of the decision ids it writes (one per process)."""

from __future__ import annotations

import grpc
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse

from tests.support.poll import until, within
from tests.support.requests import CHECK, bearer, check_request

STICKY = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own: one connection


def _answer(resp: CheckResponse) -> tuple[str, int]:
    if resp.status.code == 0:
        ids = {h.header.key: h.header.value for h in resp.ok_response.headers}
        return ids["x-auth-decision-id"].split("-")[0], 200
    return "", int(resp.denied_response.status.code)


class Worker:
    """A gRPC channel with its own connection, so it stays on one worker process."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=STICKY)
        self.check = self.channel.unary_unary(CHECK)

    def ask(self, token: str | None = None, *, cookie: str | None = None,
            path: str = "/") -> tuple[str, int]:
        """(the answering worker's decision-id prefix, or "" on a denial; the HTTP status)."""
        headers = bearer(token, **({"cookie": cookie} if cookie else {}))
        return _answer(CheckResponse.parse(self.check(check_request(headers, path=path), timeout=5)))

    def status(self, token: str | None = None, *, cookie: str | None = None, path: str = "/") -> int:
        return self.ask(token, cookie=cookie, path=path)[1]


def answered_by(port: int, token: str, timeout: float = 5) -> str:
    """One allowed Check on a new connection: the decision-id prefix of the worker that took it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=STICKY) as ch:
        resp = CheckResponse.parse(ch.unary_unary(CHECK)(check_request(bearer(token)),
                                                         timeout=timeout))
    assert resp.status.code == 0, resp
    return _answer(resp)[0]


def one_per_worker(port: int, count: int = 2, deadline: float = 20.0,
                   token: str | None = None) -> list[Worker]:
    """A ``Worker`` on each of ``count`` worker processes (new connections until each is met)."""
    found: dict[str, Worker] = {}

    def met() -> bool:
        w = Worker(port)
        prefix, status = w.ask(token)
        assert status == 200
        if prefix in found:
            w.channel.close()
        else:
            found[prefix] = w
        return len(found) == count

    until(met, deadline, interval=0, what="did not reach every worker")
    return list(found.values())


def all_answer(workers: list[Worker], want: int, timeout: float, token: str | None = None, *,
               cookie: str | None = None, path: str = "/") -> float:
    """Wait until every worker answers ``want`` for this request; how long that took."""
    def answers() -> list[int]:
        return [w.status(token, cookie=cookie, path=path) for w in workers]

    return within(lambda: all(s == want for s in answers()), timeout,
                  what=lambda: f"not {want} in every worker: {answers()}")
