"""Health checks, the pure part: Consul's classification, transitions, TTLs, output writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.health import (
    MAX_OUTPUT,
    CheckSettings,
    CheckState,
    TtlCheck,
    bounded_output,
    classify_status,
)
from qanat.errors import ConfigError
from qanat.ports import Health
from qanat.testing import FakeClock

P, W, C = Health.PASSING, Health.WARNING, Health.CRITICAL


# --- pure: classification and transitions ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [(200, P), (204, P), (299, P), (429, W), (300, C), (404, C), (500, C), (503, C), (199, C)],
)
def test_classify_status_follows_consul(code: int, expected: Health) -> None:
    """2xx is passing, 429 is warning, every other status is critical."""
    assert classify_status(code) is expected


def test_new_check_starts_critical_and_first_pass_flips_it() -> None:
    """With Consul's defaults a check starts critical and one success makes it passing."""
    clock = FakeClock()
    state = CheckState(CheckSettings(), clock())
    assert state.status is C
    assert state.record(P, "ok", clock()) is P
    assert state.critical_for(clock()) == 0.0


def test_success_before_passing_needs_consecutive_successes() -> None:
    """success_before_passing=3 flips to passing only on the third success in a row."""
    clock = FakeClock()
    state = CheckState(CheckSettings(success_before_passing=3), clock())
    assert [state.record(r, "", clock()) for r in (P, P, C, P, P)] == [C, C, C, C, C]
    assert state.record(P, "", clock()) is P


def test_failures_before_critical_and_warning() -> None:
    """Failures first turn the check warning, then critical, at their thresholds."""
    clock = FakeClock()
    settings = CheckSettings(initial=P, failures_before_warning=1, failures_before_critical=3)
    state = CheckState(settings, clock())
    assert [state.record(C, "boom", clock()) for _ in range(3)] == [W, W, C]
    assert state.output == "boom"


def test_a_success_resets_the_failure_count() -> None:
    """A success between failures restarts the count towards critical."""
    clock = FakeClock()
    state = CheckState(CheckSettings(initial=P, failures_before_critical=2), clock())
    assert [state.record(r, "", clock()) for r in (C, P, C, P, C, C)] == [P, P, P, P, P, C]


def test_deregister_only_after_critical_for_longer_than_limit() -> None:
    """The deregister clock starts when the check turns critical and resets when it recovers."""
    clock = FakeClock()
    state = CheckState(CheckSettings(initial=P, deregister_critical_after=60), clock())
    state.record(C, "down", clock())
    clock.advance(60)
    assert not state.should_deregister(clock())
    state.record(P, "up", clock.advance(0.5))
    state.record(C, "down", clock())
    clock.advance(59.9)
    assert not state.should_deregister(clock())
    clock.advance(0.2)
    assert state.should_deregister(clock())
    assert state.critical_for(clock()) == pytest.approx(60.1)


def test_without_deregister_setting_never_deregisters() -> None:
    """A check with no deregister_critical_after stays registered however long it fails."""
    clock = FakeClock()
    state = CheckState(CheckSettings(), clock())
    state.record(C, "", clock.advance(10**6))
    assert not state.should_deregister(clock.advance(10**6))


@given(st.lists(st.sampled_from([P, W, C]), max_size=40), st.integers(0, 4), st.integers(0, 4))
def test_status_always_reflects_a_streak_long_enough(
    results: list[Health], need_ok: int, need_fail: int
) -> None:
    """The status changes to a result's kind only after the configured streak of that kind."""
    settings = CheckSettings(success_before_passing=need_ok, failures_before_critical=need_fail)
    state = CheckState(settings, 0.0)
    streak_kind, streak = None, 0
    for i, result in enumerate(results):
        before = state.status
        kind = result is C
        streak = streak + 1 if kind == streak_kind else 1
        streak_kind = kind
        after = state.record(result, "", float(i))
        if after is not before:
            assert streak >= (need_fail if kind else need_ok)
            assert (after is C) == kind


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"timeout": -1},
        {"deregister_critical_after": -5},
        {"success_before_passing": -1},
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, float]) -> None:
    """Non-positive intervals, negative thresholds and limits are refused with ConfigError."""
    with pytest.raises(ConfigError, match="CheckSettings"):
        CheckSettings(**kwargs)  # type: ignore[arg-type]


# --- TTL checks -------------------------------------------------------------------------------


def test_ttl_check_is_critical_until_reported_then_expires() -> None:
    """A TTL check is critical before any report, passing within the TTL, critical after it."""
    clock = FakeClock()
    ttl = TtlCheck(10, clock=clock)
    assert ttl.result(clock())[0] is C
    ttl.pass_ttl("alive")
    assert ttl.result(clock.advance(10)) == (P, "alive")
    health, output = ttl.result(clock.advance(0.01))
    assert health is C
    assert "TTL expired" in output


def test_ttl_check_reports_warning_and_failure() -> None:
    """warn_ttl and fail_ttl set the result to warning and critical with the note."""
    clock = FakeClock()
    ttl = TtlCheck(5, clock=clock)
    ttl.warn_ttl("slow")
    assert ttl.result(clock()) == (W, "slow")
    ttl.fail_ttl("disk full")
    assert ttl.result(clock()) == (C, "disk full")


def test_ttl_must_be_positive() -> None:
    """A TTL of zero is refused with ConfigError."""
    with pytest.raises(ConfigError, match=r"TtlCheck\.ttl"):
        TtlCheck(0)


# --- output: bounded, and written only when due ------------------------------------------------


@given(st.text(max_size=3 * MAX_OUTPUT), st.integers(20, 2 * MAX_OUTPUT))
def test_bounded_output_never_exceeds_its_limit(text: str, limit: int) -> None:
    """Output is kept whole when short enough, else cut to the limit and marked as cut."""
    kept = bounded_output(text, limit)
    assert len(kept) <= limit
    if len(text) <= limit:
        assert kept == text
    else:
        assert kept.endswith("(truncated)") and text.startswith(kept.split(" ... (truncated)")[0])


def test_check_state_bounds_the_output_it_keeps() -> None:
    """A result with a huge output is kept to MAX_OUTPUT characters."""
    state = CheckState(CheckSettings(), 0.0)
    state.record(P, "x" * (10 * MAX_OUTPUT), 0.0)
    assert len(state.output) <= MAX_OUTPUT


def test_status_change_is_due_at_once_output_change_after_the_interval() -> None:
    """A new status must be written now; a new output alone waits for output_update_interval."""
    clock = FakeClock()
    state = CheckState(CheckSettings(output_update_interval=300), clock())
    state.record(P, "up 1s", clock())
    assert state.write_due(clock())
    state.mark_written(clock())
    assert not state.write_due(clock())
    state.record(P, "up 2s", clock.advance(299))
    assert not state.write_due(clock())
    assert state.write_due(clock.advance(1))
    state.mark_written(clock())
    state.record(C, "down", clock.advance(1))
    assert state.write_due(clock())


def test_forget_written_makes_the_next_write_due() -> None:
    """After forget_written (the registry changed behind us) the same status is written again."""
    state = CheckState(CheckSettings(), 0.0)
    state.record(P, "ok", 0.0)
    state.mark_written(0.0)
    state.forget_written()
    assert state.write_due(0.0)


def test_output_update_interval_must_not_be_negative() -> None:
    """A negative output_update_interval is refused with ConfigError naming the field."""
    with pytest.raises(ConfigError, match="output_update_interval"):
        CheckSettings(output_update_interval=-1)
