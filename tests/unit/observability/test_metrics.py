"""ServiceMetrics: request counts, errors and latency, and the in-flight gauge, at scrape."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from qanat.observability.metrics import LATENCY_BUCKETS, ServiceMetrics


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


requests = st.lists(
    st.tuples(
        st.sampled_from(["/items/{id}", "<unmatched>"]),
        st.sampled_from(["GET", "POST"]),
        st.sampled_from([200, 404, 499, 500, 503]),
        st.floats(0, 20, allow_nan=False),
    ),
    max_size=40,
)


@example([("/items/{id}", "GET", 200, 0.001), ("/items/{id}", "GET", 500, 10.0)])  # on bounds
@given(requests)
def test_a_scrape_shows_every_observed_request(observed: list[tuple[str, str, int, float]]) -> None:
    """Counts per status, errors (5xx), bucket counts ("le": at most the bound), count and sum
    in the exposition match the requests observed, whatever their mix."""
    metrics = ServiceMetrics("users")
    for route, method, status, seconds in observed:
        metrics.observe(route, method, status, seconds)
    value = metrics.registry.get_sample_value
    for route in ("/items/{id}", "<unmatched>"):
        for method in ("GET", "POST"):
            mine = [o for o in observed if o[:2] == (route, method)]
            labels = {"service": "users", "route": route, "method": method}
            for status in (200, 404, 499, 500, 503):
                n = sum(1 for o in mine if o[2] == status)
                got = value("qanat_http_requests_total", labels | {"status": str(status)})
                assert (got or 0) == n
            errors = sum(1 for o in mine if o[2] >= 500)
            assert (value("qanat_http_errors_total", labels) or 0) == errors
            if not mine:
                continue
            for bound in (*LATENCY_BUCKETS, float("inf")):
                le = "+Inf" if bound == float("inf") else repr(bound)
                within = sum(1 for o in mine if o[3] <= bound)
                bucket = value("qanat_http_request_duration_seconds_bucket", labels | {"le": le})
                assert bucket == within
            assert value("qanat_http_request_duration_seconds_count", labels) == len(mine)
            total = value("qanat_http_request_duration_seconds_sum", labels)
            assert total == pytest.approx(sum(o[3] for o in mine))
