"""The one place time comes from, so expiry and TTL logic is testable without sleeping
(the tests' hand-moved clock is tests/support/clock.py)."""

from __future__ import annotations

import datetime
import time


class Clock:
    """Wall time for token claims, monotonic time for caches."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = Clock()


def iso_utc(seconds: float) -> str:
    """``2026-11-23T10:00:00.123Z``: a wall time in UTC, to the millisecond (audit, logs)."""
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
