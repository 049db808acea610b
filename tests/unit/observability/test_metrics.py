"""ServiceMetrics: the in-flight gauge read at scrape time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qanat.observability.metrics import ServiceMetrics


def in_flight(metrics: ServiceMetrics) -> float | None:
    return metrics.registry.get_sample_value(
        "qanat_http_requests_in_flight", {"service": metrics.service}
    )


@given(st.lists(st.booleans(), max_size=50))
def test_the_in_flight_gauge_reads_starts_minus_finishes(moves: list[bool]) -> None:
    """After any sequence of starts and finishes, a scrape shows their difference."""
    metrics = ServiceMetrics("users")
    assert in_flight(metrics) == 0.0  # exported from the start, not only after a request
    for started in moves:
        if started:
            metrics.in_flight_now.inc()
        else:
            metrics.in_flight_now.dec()
    assert in_flight(metrics) == sum(1 if m else -1 for m in moves)
