"""The hand-written W3C traceparent parser, checked against OpenTelemetry's propagator."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.unit.observability.strategies import reference, traceparents

from qanat.observability.trace_context import format_traceparent, parse_traceparent

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@example(f"00-{TRACE_ID}-{PARENT_ID}-01")
@example(f"ff-{TRACE_ID}-{PARENT_ID}-01")
@example(f"00-{TRACE_ID}-{PARENT_ID}-01-extra")
@example(f"01-{TRACE_ID}-{PARENT_ID}-01-extra")
@example(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01")
@settings(max_examples=500)  # cheap examples; enough that dozens are valid ones
@given(traceparents)
def test_the_parser_agrees_with_opentelemetrys_propagator(value: str) -> None:
    """For any value, valid or not, the parser finds exactly the ids and flags the SDK finds."""
    assert parse_traceparent(value) == reference(value)


@given(
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.integers(0, 255),
)
def test_a_formatted_traceparent_parses_back_to_its_ids(
    trace_id: int, span_id: int, flags: int
) -> None:
    """Any non-zero ids and any flags survive format then parse, as text and as bytes."""
    text = format_traceparent(trace_id, span_id, flags)
    assert parse_traceparent(text) == (trace_id, span_id, flags)
    assert parse_traceparent(text.encode()) == (trace_id, span_id, flags)
    assert parse_traceparent(text).sampled is bool(flags & 1)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", "version ff is forbidden"),
        (f"00-{'0' * 32}-{PARENT_ID}-01", "all-zero trace id"),
        (f"00-{TRACE_ID}-{'0' * 16}-01", "all-zero parent id"),
        (f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", "trace id too short"),
        (f"00-{TRACE_ID}-{PARENT_ID}0-01", "parent id too long"),
        (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", "upper-case hex"),
        (f"00-{TRACE_ID}-{PARENT_ID}-01-", "version 00 has exactly four fields"),
        (f"00_{TRACE_ID}_{PARENT_ID}_01", "wrong separators"),
        (f"00-{TRACE_ID}-{PARENT_ID}-1", "one-digit flags"),
        ("", "empty"),
        (None, "absent"),
    ],
)
def test_invalid_values_start_a_new_trace(value: str | None, why: str) -> None:
    """Each rule of W3C Trace Context §3.2 that can break, broken alone, makes the value invalid."""
    assert parse_traceparent(value) is None, why


def test_a_future_version_is_read_as_version_00() -> None:
    """A higher version's first four fields are read, and what follows a '-' is ignored (§4.3)."""
    parsed = parse_traceparent(f" cc-{TRACE_ID}-{PARENT_ID}-00-new-fields\t")
    assert parsed == (int(TRACE_ID, 16), int(PARENT_ID, 16), 0)
    assert parsed is not None and not parsed.sampled
