"""The one bounded cache behind every memo and cache on the Check path."""

from __future__ import annotations

from extauthz.cache import BoundedCache
from extauthz.request import split_host


def test_a_memo_that_is_full_starts_over_and_never_grows_past_its_limit() -> None:
    memo: BoundedCache[str, int] = BoundedCache(3)
    for i in range(3):
        memo.put(f"k{i}", i)
    assert [memo.get(f"k{i}") for i in range(3)] == [0, 1, 2]
    memo.put("k1", 10)  # a key it holds: replaced in place, nothing dropped
    assert (len(memo), memo.get("k0"), memo.get("k1")) == (3, 0, 10)
    assert memo.put("k3", 3) == 3  # full: it starts over with the new key
    assert (len(memo), memo.get("k0"), memo.get("k3")) == (1, None, 3)


def test_an_lru_cache_drops_the_entry_used_least_recently() -> None:
    cache: BoundedCache[str, str] = BoundedCache(2, lru=True)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a read alone is not a use...
    cache.put("c", "C")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "B", "C")
    cache.touch("b")  # ...a touch is
    cache.put("d", "D")
    assert (cache.get("b"), cache.get("c"), cache.get("d")) == ("B", None, "D")
    assert len(cache) == 2


def test_a_cache_with_no_room_keeps_nothing_and_a_discarded_entry_is_gone() -> None:
    for lru in (False, True):
        none: BoundedCache[str, int] = BoundedCache(0, lru=lru)
        assert none.put("a", 1) == 1
        assert (none.get("a"), len(none)) == (None, 0)
        some: BoundedCache[str, int] = BoundedCache(2, lru=lru)
        some.put("a", 1)
        some.discard("a")
        some.discard("never there")
        assert (some.get("a"), len(some)) == (None, 0)


def test_touching_an_entry_of_a_memo_that_starts_over_is_harmless() -> None:
    memo: BoundedCache[str, int] = BoundedCache(2)
    memo.put("a", 1)
    memo.touch("a")
    memo.touch("never there")
    assert memo.get("a") == 1


def test_the_host_memo_stays_bounded_when_a_client_invents_hosts() -> None:
    from extauthz.request import _HOSTS

    for i in range(_HOSTS.limit + 10):
        assert split_host(f"h{i}.example:8443") == f"h{i}.example"
    assert 0 < len(_HOSTS) <= _HOSTS.limit
    assert split_host("A.Example.") == "a.example"
