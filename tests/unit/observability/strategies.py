"""Hypothesis strategies and the reference oracle for W3C traceparent values."""

from __future__ import annotations

from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qanat.observability.trace_context import TraceParent

HEX = "0123456789abcdef"
_PROPAGATOR = TraceContextTextMapPropagator()


def reference(value: str) -> TraceParent | None:
    """What OpenTelemetry's own W3C propagator makes of ``value`` (the oracle)."""
    ctx = trace.get_current_span(_PROPAGATOR.extract({"traceparent": value})).get_span_context()
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
"""traceparent-shaped values: valid ones, and ones with one or more rules broken."""

traceparents = st.one_of(shaped, shaped, shaped, st.text(HEX + "-ABF \tz", max_size=70))
"""Mostly traceparent-shaped values, sometimes arbitrary text from the same characters."""
