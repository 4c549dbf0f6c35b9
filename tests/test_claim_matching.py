"""A claim requirement means the same however it is evaluated: the set lookup for string
values (the fast path) agrees with comparing value by value, where True is not 1."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.policy.evaluate import _accepts, _same

scalars = st.one_of(st.text(max_size=4), st.integers(-2, 2), st.booleans(),
                    st.sampled_from([1.0, 0.0, "1", "true", "True"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=2), inner,
                                                                       max_size=2)), max_leaves=6)


def reference(value: Any, accepted: tuple[Any, ...]) -> bool:
    if isinstance(value, list):
        return any(_same(v, a) for v in value for a in accepted)
    return any(_same(value, a) for a in accepted)


@settings(max_examples=600, deadline=None)
@given(value=values, accepted=st.lists(scalars, min_size=1, max_size=4).map(tuple))
def test_the_fast_path_agrees_with_value_by_value_comparison(value: Any, accepted: tuple[Any, ...]) -> None:
    assert _accepts(value, accepted) == reference(value, accepted)


def test_true_is_not_the_string_or_the_number_one() -> None:
    assert not _accepts(True, ("true",))
    assert not _accepts([True], ("True", "1"))
    assert not _accepts(1, ("1",))
    assert _accepts(["dev", {"x": 1}, "sre"], ("sre",))
    assert _accepts("sre", ("sre", "dev"))
