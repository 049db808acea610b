"""Restart backoff: doubling delays per crash streak, a cap, and forgiveness after stability."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from qanat.runner.restart import RestartBackoff, RestartSettings

settings_st = st.builds(
    RestartSettings,
    base=st.floats(0.01, 5),
    cap=st.floats(5, 120),
    stable_after=st.floats(1, 600),
)


@given(settings_st, st.integers(1, 40))
def test_quick_crashes_double_the_delay_up_to_the_cap(s: RestartSettings, crashes: int) -> None:
    """Crashes in a row (each soon after its start) wait base, 2*base, 4*base ... at most cap."""
    backoff = RestartBackoff(s)
    now = 0.0
    delays = []
    for _ in range(crashes):
        backoff.started(now)
        now += s.stable_after / 2  # crashed before it counted as stable
        delays.append(backoff.crashed(now))
        now += delays[-1]
    assert delays == [min(s.cap, s.base * 2.0**i) for i in range(crashes)]
    assert all(a <= b for a, b in itertools.pairwise(delays))


@given(settings_st, st.integers(1, 20))
def test_a_stable_run_forgives_the_streak(s: RestartSettings, streak: int) -> None:
    """After running at least stable_after seconds, the next crash waits the base delay again."""
    backoff = RestartBackoff(s)
    now = -1e6  # the streak happens before 0, so the stable run below is exactly stable_after
    for _ in range(streak):
        backoff.started(now)
        now += backoff.crashed(now)
    backoff.started(0.0)
    assert backoff.crashed(s.stable_after) == s.base
    assert backoff.crashes == 1


def test_first_crash_without_start_waits_the_base() -> None:
    """A crash reported before any start (spawn failed) still gets the base delay."""
    assert RestartBackoff(RestartSettings(base=0.25)).crashed(100.0) == 0.25
