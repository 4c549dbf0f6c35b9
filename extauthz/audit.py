"""The audit trail: one JSON line per decision, who did what, when, under which policy.

The hot path only appends a small dict to a queue; a background task turns batches into
JSON lines on stdout (in a thread, so a slow stdout never blocks the event loop) and,
when configured, into a Redis Stream (``XADD … MAXLEN ~``) so ``extauthz audit tail`` and
``audit export`` see every replica. Records carry no headers and no query strings: tokens,
cookies and other secrets never enter them (``safe_path`` is the one place paths are cut).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import sys
from collections import deque
from typing import IO, Any

import orjson
from redis.exceptions import RedisError

from extauthz.clock import Clock
from extauthz.decision import Decision
from extauthz.request import RequestView

log = logging.getLogger("extauthz.audit")
_PATH_PARAMETER = re.compile(r";[^/]*")

FIELDS = ("time", "decision_id", "decision", "status", "reason", "policy", "dry_run",
          "would_deny", "subject", "username", "issuer", "client_id", "acr", "stepup_auth_time",
          "method", "host", "path", "source", "request_id")
MAX_QUEUE = 100_000


def safe_path(path: str) -> str:
    """The path without query, fragment or ``;`` path parameters (``;jsessionid=…`` is a
    session credential; any of them may carry tokens or personal data)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    return _PATH_PARAMETER.sub("", path) if ";" in path else path


def _iso(now: float) -> str:
    """``2026-11-23T10:00:00.123Z``: UTC, milliseconds."""
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_record(decision: Decision, view: RequestView | None, now: float) -> dict[str, Any]:
    return _record(decision, view, _iso(now))


def _record(decision: Decision, view: RequestView | None, time: str) -> dict[str, Any]:
    ident = decision.identity
    return {
        "time": time,
        "decision_id": decision.decision_id,
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": str(decision.reason),
        "policy": decision.policy_id,
        "dry_run": decision.dry_run,
        "would_deny": decision.would_deny,
        "subject": ident.subject if ident else None,
        "username": ident.username if ident else None,
        "issuer": ident.issuer if ident else None,
        "client_id": ident.client_id if ident else None,
        "acr": ident.acr if ident else None,
        "stepup_auth_time": ident.auth_time if ident and ident.acr else None,
        "method": view.method if view else None,
        "host": view.host if view else None,
        "path": safe_path(view.path) if view else None,
        "source": view.source_address if view else None,
        "request_id": view.request_id if view else None,
    }


class LineFormat:
    """``json.dumps(audit_record(...), separators=(",", ":"))``, byte for byte, written by
    orjson (as fast as the hand-built format it replaced, ~1.7 µs a line, against ~5.5 µs
    for json.dumps). Lines stay printable ASCII as json.dumps writes them: orjson writes
    other characters raw, and a reader that splits lines at U+2028 or NEL (Python's
    ``splitlines`` does) must never see a client's value break one, so such a rare line
    is written by json.dumps instead. The timestamp's second is formatted once a second."""

    def __init__(self) -> None:
        self._stamp: tuple[int, str] = (-1, "")  # one tuple: a second and its text, never mixed

    def _time(self, now: float) -> str:
        second = int(now)
        micros = round((now - second) * 1_000_000)  # as datetime.fromtimestamp rounds
        if micros >= 1_000_000:
            second, micros = second + 1, 0
        stamp = self._stamp
        if stamp[0] != second:
            text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            stamp = (second, text)
            self._stamp = stamp
        return f"{stamp[1]}.{micros // 1000:03d}Z"

    def line(self, decision: Decision, view: RequestView | None, now: float) -> str:
        record = _record(decision, view, self._time(now))
        try:
            line = orjson.dumps(record).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits
            return json.dumps(record, separators=(",", ":"))
        if line.isascii() and "\x7f" not in line:
            return line
        return json.dumps(record, separators=(",", ":"))


class AuditLog:
    def __init__(self, clock: Clock, *, stdout: bool, redis: Any = None, stream: str = "",
                 maxlen: int = 100_000, flush_interval: float = 0.2,
                 out: IO[str] | None = None) -> None:
        self._clock = clock
        self._stdout = stdout
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen
        self._interval = flush_interval
        self._out = out or sys.stdout
        # (decision, view, time): both frozen, so the record is built off the Check path
        self._queue: deque[tuple[Decision, RequestView | None, float]] = deque(maxlen=MAX_QUEUE)
        self._format = LineFormat()
        self.dropped = 0
        self.enabled = stdout or redis is not None

    def record(self, decision: Decision, view: RequestView | None) -> None:
        """Hot path: O(1), no I/O, no formatting."""
        if self.enabled:
            if len(self._queue) == MAX_QUEUE:
                self.dropped += 1
            self._queue.append((decision, view, self._clock.wall()))

    def _lines(self, batch: list[tuple[Decision, RequestView | None, float]]) -> list[str]:
        line = self._format.line
        return [line(*item) for item in batch]

    def _write(self, lines: list[str]) -> None:
        self._out.write("".join(line + "\n" for line in lines))
        self._out.flush()

    async def flush(self) -> None:
        batch = []
        while self._queue:  # popleft on the loop's thread: nothing appended meanwhile is lost
            batch.append(self._queue.popleft())
        if not batch:
            return
        lines = await asyncio.to_thread(self._lines, batch)
        if self._stdout:
            await asyncio.to_thread(self._write, lines)
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for line in lines:
                        pipe.xadd(self._stream, {"record": line}, maxlen=self._maxlen,
                                  approximate=True)
                    await pipe.execute()
            except (RedisError, OSError) as e:
                log.warning("audit: %d records not written to the Redis stream: %s", len(lines), e)

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.flush()
        finally:
            await self.flush()  # on shutdown: what was decided is written
