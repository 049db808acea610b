"""Request context helpers: the budget header and request-id validation."""

from __future__ import annotations

import math
import string

from hypothesis import example, given
from hypothesis import strategies as st

from qanat.observability import context

SAFE = string.ascii_letters + string.digits + "._-"


@given(st.floats(min_value=-1e6, max_value=86_400_000, allow_nan=False))
def test_a_numeric_budget_is_read_in_seconds(ms: float) -> None:
    """Any finite number of milliseconds up to a day parses to that many seconds."""
    assert context.parse_budget(repr(ms)) == ms / 1000.0


@given(st.integers(min_value=86_400_001, max_value=10**30))
def test_an_absurd_budget_is_ignored(ms: int) -> None:
    """A budget over a day is not trusted: it reads as no budget at all."""
    assert context.parse_budget(str(ms)) is None


@given(st.text().filter(lambda s: not _is_float(s)))
def test_a_non_numeric_budget_is_ignored(value: str) -> None:
    """Text that is not a number reads as no budget (the request is not refused for it)."""
    assert context.parse_budget(value) is None


def test_nan_and_absent_budgets_are_ignored() -> None:
    """NaN and a missing header both mean no budget."""
    assert context.parse_budget("nan") is None
    assert context.parse_budget(None) is None


@given(st.text(alphabet=SAFE, min_size=1, max_size=128))
def test_safe_request_ids_are_kept(value: str) -> None:
    """Ids of 1 to 128 letters, digits, dots, underscores and dashes are valid."""
    assert context.valid_request_id(value)


@example("abc\n")  # "$" in a regex matches before a final newline: header injection
@given(st.text(min_size=1, max_size=200))
def test_unsafe_request_ids_are_refused(value: str) -> None:
    """An id is valid exactly when it is 1-128 safe characters, so nothing else reaches logs."""
    expected = len(value) <= 128 and all(c in SAFE for c in value)
    assert context.valid_request_id(value) is expected


def test_remaining_is_measured_from_the_deadline() -> None:
    """remaining(now) is the deadline minus now, and None without a deadline."""
    assert context.remaining(5.0) is None
    token = context.deadline.set(10.0)
    try:
        assert context.remaining(now=7.5) == 2.5
        assert context.remaining(now=12.0) == -2.0
    finally:
        context.deadline.reset(token)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_infinite_budgets() -> None:
    """'inf' is absurd (ignored); '-inf' has nothing left (refused by the middleware)."""
    assert context.parse_budget("inf") is None
    minus = context.parse_budget("-inf")
    assert minus is not None and math.isinf(minus) and minus < 0
