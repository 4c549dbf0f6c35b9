"""One bounded cache for every memo and cache on the Check path.

Two ways to make room, as each use needs:

- ``lru=False`` (the default), for memos of pure answers to the same few questions (a host
  of an authority, a rendered header set, an encoded response): when full it starts over.
  Clearing is cheaper than keeping track of use, and many distinct keys (many users, a
  client inventing hosts) cost a refill, never memory.
- ``lru=True``, for caches of expensive work whose keys keep coming back (verified tokens,
  step-up cookies): the least recently used entry makes room.

``get`` is the dict's own ``get``, so a hit costs what a dict lookup costs; it answers None
for a key it does not hold, so values are never None (wrap an answer that may be None in a
tuple). With ``lru=True`` a read is not a use: the caller ``touch``es the entry it used (a
token found expired is not used but ``discard``ed: the caller knows the clock and the rule).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _untracked(_key: object) -> None:
    """``touch`` of a cache that starts over when full: use is not tracked."""


class BoundedCache(Generic[K, V]):
    """At most ``limit`` entries (``limit <= 0``: keeps nothing)."""

    __slots__ = ("_entries", "_lru", "_order", "get", "limit", "touch")

    def __init__(self, limit: int, *, lru: bool = False) -> None:
        self.limit = limit
        self._lru = lru
        self._order: OrderedDict[K, V] = OrderedDict()  # lru: the entries, least recently used first
        self._entries: dict[K, V] = self._order if lru else {}
        # Bound C methods: a hit costs a dict lookup (and, lru, a move), no Python frame.
        self.get: Callable[[K], V | None] = self._entries.get
        self.touch: Callable[[K], None] = self._order.move_to_end if lru else _untracked

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` for ``key``, making room first; returns ``value``."""
        if self.limit <= 0:
            return value
        if self._lru:
            order = self._order
            order[key] = value
            order.move_to_end(key)
            if len(order) > self.limit:
                order.popitem(last=False)
            return value
        entries = self._entries
        if len(entries) >= self.limit and key not in entries:
            entries.clear()
        entries[key] = value
        return value

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
