"""The one place time comes from, so expiry and TTL logic is testable without sleeping
(the tests' hand-moved clock is tests/support/clock.py)."""

from __future__ import annotations

import time


class Clock:
    """Wall time for token claims, monotonic time for caches."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = Clock()
