"""Rolling windows: totals match a brute-force count of the events still in the window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.window import EXCLUDED, FAILURE, SUCCESS, Counts, RollingCounts, RollingWindow
from qanat.errors import ConfigError

# -- RollingWindow (the throttle's) --------------------------------------------------------

steps = st.lists(
    st.tuples(st.floats(0, 3, allow_nan=False), st.booleans()), min_size=1, max_size=80
)


@given(size=st.integers(1, 8), width=st.sampled_from([0.25, 0.5, 1.0, 3.0]), steps=steps)
def test_rolling_window_matches_brute_force(
    size: int, width: float, steps: list[tuple[float, bool]]
) -> None:
    """totals(now) counts exactly the events in the last `size` buckets of `width` seconds."""
    window = RollingWindow(size, width)
    now = 0.0
    events: list[tuple[int, bool]] = []
    for gap, hit in steps:
        now += gap
        window.add(now, hit)
        events.append((int(now // width), hit))
        newest = int(now // width)
        live = [h for slot, h in events if newest - slot < size]
        assert window.totals(now) == (len(live), sum(live))


def test_rolling_window_forgets_after_a_whole_window() -> None:
    """After `size * width` quiet seconds the window is empty."""
    window = RollingWindow(4, 0.5)
    for _ in range(10):
        window.add(10.0, True)
    assert window.totals(11.9) == (10, 10)
    assert window.totals(12.0) == (0, 0)


def test_rolling_window_stays_put_when_the_clock_steps_back() -> None:
    """An earlier `now` counts into the newest bucket instead of rewriting history."""
    window = RollingWindow(2, 1.0)
    window.add(5.0, True)
    window.add(3.0, False)
    assert window.totals(5.0) == (2, 1)
    assert window.totals(6.5) == (2, 1)
    assert window.totals(7.0) == (0, 0)


@pytest.mark.parametrize(("size", "width"), [(0, 1.0), (True, 1.0), (2, 0.0), (2, float("inf"))])
def test_rolling_window_rejects_bad_shapes(size: int, width: float) -> None:
    """A window needs a whole number of buckets >= 1 and a finite positive width."""
    with pytest.raises(ConfigError):
        RollingWindow(size, width)


def test_rolling_window_is_the_same_class_from_either_module() -> None:
    """``qanat.core.window`` re-exports the throttle's window from ``rolling_window``."""
    from qanat.core import rolling_window, window

    assert window.RollingWindow is rolling_window.RollingWindow
    assert "RollingWindow" in window.__all__


# -- RollingCounts (the breaker's) ----------------------------------------------------------

outcomes = st.sampled_from([SUCCESS, FAILURE, EXCLUDED])


def trailing_run(results: list[int], kind: int) -> int:
    """Length of the run of `kind` at the end, skipping exclusions (they break no run)."""
    run = 0
    for outcome in reversed([r for r in results if r != EXCLUDED]):
        if outcome != kind:
            break
        run += 1
    return run


@given(size=st.integers(1, 6), steps=st.lists(st.tuples(st.integers(0, 3), outcomes),
                                              max_size=60))
def test_rolling_counts_match_brute_force(size: int, steps: list[tuple[int, int]]) -> None:
    """With results settled at once, totals and runs equal a recount of the live buckets."""
    counts = RollingCounts(size)
    age = 0
    history: list[tuple[int, int]] = []  # (age, outcome)
    for gap, outcome in steps:
        age += gap
        counts.grow(age)
        counts.on_request()
        counts.record(age, outcome)
        history.append((age, outcome))
        live = [o for a, o in history if age - a < size]
        assert counts.total.snapshot() == Counts(
            requests=len(live),
            total_successes=live.count(SUCCESS),
            total_failures=live.count(FAILURE),
            total_exclusions=live.count(EXCLUDED),
            consecutive_successes=trailing_run(live, SUCCESS),
            consecutive_failures=trailing_run(live, FAILURE),
        )


def test_rolling_counts_drop_results_whose_bucket_fell_off() -> None:
    """A result for an age that left the window, or is in the future, is not counted."""
    counts = RollingCounts(3)
    counts.on_request()
    counts.grow(3)
    counts.record(0, FAILURE)
    counts.record(4, FAILURE)
    assert counts.total.snapshot() == Counts()


def test_rolling_counts_late_result_joins_its_own_bucket() -> None:
    """A late result still in the window is credited to the bucket it was admitted in."""
    counts = RollingCounts(3)
    counts.on_request()
    counts.grow(2)
    counts.record(0, FAILURE)
    assert counts.total.snapshot() == Counts(1, 0, 1, 0, 0, 1)
    counts.grow(3)
    assert counts.total.snapshot() == Counts()


def test_rolling_counts_need_a_bucket() -> None:
    """Zero buckets is a configuration error."""
    with pytest.raises(ConfigError):
        RollingCounts(0)
