"""A clock tests move by hand: expiry and TTL logic without sleeping.

The product takes any ``extauthz.clock.Clock`` (wall time for token claims, monotonic time for
caches); this one is the tests' own, never installed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from extauthz.clock import Clock


@dataclass
class FakeClock(Clock):
    """Starts at the real wall time (or ``now_wall``); moves only when ``advance`` says."""

    now_wall: float = field(default_factory=time.time)
    now_monotonic: float = 1000.0

    def wall(self) -> float:
        return self.now_wall

    def monotonic(self) -> float:
        return self.now_monotonic

    def advance(self, seconds: float) -> None:
        self.now_wall += seconds
        self.now_monotonic += seconds
