"""The hand-written W3C traceparent parser, checked against OpenTelemetry's propagator."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qanat.observability.trace_context import TraceParent, format_traceparent, parse_traceparent

HEX = "0123456789abcdef"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
PROPAGATOR = TraceContextTextMapPropagator()


def reference(value: str) -> TraceParent | None:
    """What OpenTelemetry's own W3C propagator makes of ``value`` (the oracle)."""
    ctx = trace.get_current_span(PROPAGATOR.extract({"traceparent": value})).get_span_context()
    if not ctx.is_valid:
        return None
    return TraceParent(ctx.trace_id, ctx.span_id, int(ctx.trace_flags))


def field(size: int) -> st.SearchStrategy[str]:
    """A non-zero field of the right form three times in four, else zeros or a near miss."""
    # From integers, not text: Hypothesis leans towards "000…", which is all-zero, invalid.
    right = st.integers(1, 16**size - 1).map(lambda n: format(n, f"0{size}x"))
    return st.one_of(
        right,
        right,
        right,
        right,
        right,
        right,
        st.just("0" * size),
        st.text(HEX + "ABCDEFgx-", min_size=size - 1, max_size=size + 1),
    )


shaped = st.builds(
    lambda before, version, trace_id, span_id, flags, rest, after: (
        f"{before}{version}-{trace_id}-{span_id}-{flags}{rest}{after}"
    ),
    st.sampled_from(["", " ", "\t "]),
    st.one_of(st.sampled_from(["00", "00", "00", "01", "cc", "ff"]), field(2)),
    field(32),
    field(16),
    field(2),
    st.sampled_from(["", "", "", "-", "-what-comes-next", "x", "-00"]),
    st.sampled_from(["", " ", "\t"]),
)


@example(f"00-{TRACE_ID}-{PARENT_ID}-01")
@example(f"ff-{TRACE_ID}-{PARENT_ID}-01")
@example(f"00-{TRACE_ID}-{PARENT_ID}-01-extra")
@example(f"01-{TRACE_ID}-{PARENT_ID}-01-extra")
@example(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01")
@settings(max_examples=500)  # cheap examples; enough that dozens are valid ones
@given(st.one_of(shaped, shaped, shaped, st.text(HEX + "-ABF \tz", max_size=70)))
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
