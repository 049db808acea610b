"""Rate-limit header values from a Decision: Retry-After, IETF RateLimit fields, X-RateLimit-*."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.ratelimit import GCRA
from qanat.core.ratelimit_base import Decision
from qanat.core.ratelimit_headers import (
    policy_window,
    rate_limit_headers,
    ratelimit,
    ratelimit_policy,
    retry_after,
)

seconds = st.floats(min_value=1e-6, max_value=1e5, allow_nan=False)


def test_allowed_decision_headers() -> None:
    """An allowed decision gets RateLimit, RateLimit-Policy, X-RateLimit-* and no Retry-After."""
    d = Decision(True, 7, 10, 2.2, 0.0)
    assert rate_limit_headers(d, policy="per-ip", window=10) == [
        (b"ratelimit-policy", b'"per-ip";q=10;w=10'),
        (b"ratelimit", b'"per-ip";r=7;t=3'),
        (b"x-ratelimit-limit", b"10"),
        (b"x-ratelimit-remaining", b"7"),
        (b"x-ratelimit-reset", b"3"),
    ]


def test_refused_decision_headers() -> None:
    """A refusal adds Retry-After, and RateLimit's ``t`` is that same wait."""
    h = dict(rate_limit_headers(Decision(False, 0, 10, 9.5, 0.25), legacy=False))
    assert h == {b"ratelimit": b'"default";r=0;t=1', b"retry-after": b"1"}


@given(seconds)
def test_retry_after_is_never_earlier_than_the_wait(wait: float) -> None:
    """Retry-After rounds up: a client waiting that long is never early."""
    value = int(retry_after(Decision(False, 0, 1, wait, wait)))
    assert value >= wait and value >= 1 and value - wait < 1


@given(seconds, seconds)
def test_ratelimit_t_matches_retry_after_when_refused(wait: float, reset: float) -> None:
    """The effective window never ends after Retry-After points (draft §6)."""
    d = Decision(False, 0, 5, max(wait, reset), wait)
    t = int(ratelimit("p", d).split(b";t=")[1])
    assert t == int(retry_after(d))


@given(st.floats(min_value=0.01, max_value=1e4), st.integers(min_value=1, max_value=10_000))
def test_policy_window_is_whole_seconds_and_never_overstates(rate: float, burst: int) -> None:
    """``w`` is a positive integer and ``q`` never exceeds what GCRA admits in ``w`` seconds."""
    q, w = policy_window(rate, burst)
    assert w >= 1 and isinstance(w, int)
    assert q <= math.floor(rate * w) + burst


def test_policy_window_values_against_gcra() -> None:
    """For 8/s with burst 16 a fresh key really takes 16 at once: the policy says q=16 per 2 s."""
    assert policy_window(8, 16) == (16, 2)
    gcra = GCRA(8, 16)
    assert sum(gcra.allow("k", 0.0).allowed for _ in range(25)) == 16


def test_policy_names_are_quoted_and_escaped() -> None:
    """Names are sf-strings; unprintable names and bad numbers are refused."""
    assert ratelimit_policy('a"b', 1, 1) == b'"a\\"b";q=1;w=1'
    with pytest.raises(ValueError, match="printable"):
        ratelimit_policy("a\nb", 1, 1)
    with pytest.raises(ValueError, match="window"):
        ratelimit_policy("a", 1, 0)
