"""Where audit records go: one JSON line each on stdout and, when configured, a Redis Stream.

The hot path only appends a small tuple to a queue; a background task turns batches into
lines (in a thread, so a slow stdout never blocks the event loop), writes them to stdout and
``XADD``s them to the stream (``MAXLEN ~``) so ``extauthz audit tail`` and ``audit export``
see every replica.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from typing import IO, Any

from redis.exceptions import RedisError

from extauthz.audit.record import LineFormat
from extauthz.clock import Clock
from extauthz.decision import Decision
from extauthz.request import RequestView

log = logging.getLogger("extauthz.audit")
MAX_QUEUE = 100_000


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
