"""Waiting for something another process or task does: poll a condition until it holds or a
deadline passes. One loop for every test, so a timeout always fails the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Detail = str | Callable[[], object] | None


def _failure(what: Detail, timeout: float, last: object) -> AssertionError:
    detail = what() if callable(what) else what if what is not None else f"last: {last!r}"
    return AssertionError(f"not reached within {timeout}s: {detail}")


def fetch_until(fetch: Callable[[], T], accept: Callable[[T], object], timeout: float = 5.0,
                interval: float = 0.05, *, what: Detail = None) -> T:
    """Call ``fetch`` every ``interval`` seconds until ``accept`` takes what it returned, and
    return that; after ``timeout`` seconds, fail the test showing ``what`` (called, if it is
    a function) or else the last value fetched."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = value = fetch()
        if accept(value):
            return value
        time.sleep(interval)
    raise _failure(what, timeout, last)


def until(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05, *,
          what: Detail = None) -> T:
    """Wait until ``predicate`` returns something true, and return that."""
    return fetch_until(predicate, bool, timeout, interval, what=what)


def within(predicate: Callable[[], object], timeout: float, interval: float = 0.01, *,
           what: Detail = None) -> float:
    """``until``, answering how many seconds it took (for tests that promise a latency)."""
    start = time.monotonic()
    until(predicate, timeout, interval, what=what)
    return time.monotonic() - start


async def eventually(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, *,
                     what: Detail = None) -> T:
    """``until`` for a test on an event loop: it sleeps without blocking the loop, so the
    tasks it waits for keep running."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = result = predicate()
        if result:
            return result
        await asyncio.sleep(interval)
    raise _failure(what, timeout, last)
