"""The rate-limit filter's reused header pieces give exactly the core helper's fields."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qanat.core.ratelimit_base import Decision
from qanat.core.ratelimit_headers import rate_limit_headers
from qanat.gateway.filters_ratelimit import rate_limit_filter

decisions = st.builds(
    Decision, st.booleans(), st.integers(-3, 10**6), st.integers(1, 10**6),
    st.floats(0, 1e6, allow_nan=False), st.floats(0, 1e6, allow_nan=False),
)


@given(st.lists(decisions, min_size=1, max_size=5),
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64),
       st.booleans(), st.sampled_from([{"rate": 5, "burst": 10}, {"limit": 7, "window": "90s"}]))
def test_filter_headers_equal_the_core_helper(
    ds: list[Decision], policy: str, on: bool, limits: dict[str, Any]
) -> None:
    """For any decisions (limits changing too), policy name and switch, the fields match."""
    f = rate_limit_filter({**limits, "policy": policy, "headers": on}, "r")
    for d in ds:
        assert f.headers(d) == rate_limit_headers(
            d, policy=policy, window=f._window, ietf=on, legacy=on)


def test_a_policy_name_with_separators_and_quotes_is_kept_whole() -> None:
    """A name holding ``;q=``, quotes and backslashes comes out quoted as the core helper does."""
    name = 'a;q=1;w=2 "b" \\c'
    f = rate_limit_filter({"rate": 5, "burst": 10, "policy": name}, "r")
    d = Decision(True, 3, 10, 1.5, 0.0)
    assert f.headers(d) == rate_limit_headers(d, policy=name, window=f._window)
