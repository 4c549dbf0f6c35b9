"""The one place time comes from, so expiry and TTL logic is testable without sleeping."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class Clock:
    """Wall time for token claims, monotonic time for caches."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class FakeClock(Clock):
    """A clock tests move by hand."""

    now_wall: float = field(default_factory=time.time)
    now_monotonic: float = 1000.0

    def wall(self) -> float:
        return self.now_wall

    def monotonic(self) -> float:
        return self.now_monotonic

    def advance(self, seconds: float) -> None:
        self.now_wall += seconds
        self.now_monotonic += seconds


SYSTEM_CLOCK = Clock()
