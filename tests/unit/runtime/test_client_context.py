"""What the service client carries across: deadlines, request ids, W3C trace context, policies."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.unit.runtime.client_support import harness, retrying, sequence, settings, status

from qanat.core.breaker import BreakerSettings
from qanat.core.retry import RetryPolicy
from qanat.errors import ConfigError, DeadlineExceeded
from qanat.http import (
    BodyTooLarge,
    ConnectError,
    InvalidRequest,
    PoolOverloaded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from qanat.observability import context
from qanat.policy import load_policies
from qanat.runtime.client import ClientSettings, settings_from_policy
from qanat.runtime.client_request import prepare, retry_delay


@contextlib.contextmanager
def deadline_in(seconds: float) -> Iterator[None]:
    """``context.deadline`` set to now + ``seconds`` inside the block."""
    token = context.deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        context.deadline.reset(token)


async def test_spent_caller_deadline_raises_without_sending() -> None:
    """With the propagated deadline in the past the client raises and sends nothing."""
    async with harness(status(200)) as h:
        with deadline_in(-1.0), pytest.raises(DeadlineExceeded):
            await h.client.get("/x")
        assert h.received() == 0


async def test_budget_header_never_exceeds_the_callers_remaining_time() -> None:
    """Under a 2 s caller deadline the header carries at most 2000 ms (and more than 0)."""
    async with harness(status(200)) as h:
        with deadline_in(2.0):
            await h.client.get("/x")
        sent = int(h.upstreams[0].received[0].header(b"x-qanat-budget-ms") or b"-1")
        assert 0 < sent <= 2000


async def test_budget_header_is_the_call_timeout_without_a_caller_deadline() -> None:
    """With no propagated deadline the header is bounded by this call's own timeout."""
    async with harness(status(200)) as h:
        await h.client.get("/x", timeout=1.5)
        assert h.upstreams[0].received[0].header(b"x-qanat-budget-ms") == b"1500"


async def test_budget_header_shrinks_on_each_retry_by_the_time_spent() -> None:
    """A retry after a 12.5 ms backoff (fake clock) advertises 12.5 ms less, rounded down."""
    async with harness(sequence(503, 200)) as h:
        await h.client.get("/x", timeout=1.0)
        sent = [r.header(b"x-qanat-budget-ms") for r in h.upstreams[0].received]
        assert sent == [b"1000", b"987"]


async def test_request_id_from_context_is_sent_on_every_attempt() -> None:
    """The current request's id goes upstream unchanged, retries included."""
    async with harness(sequence(503, 200)) as h:
        token = context.request_id.set("req-abc.123")
        try:
            await h.client.get("/x")
        finally:
            context.request_id.reset(token)
        ids = [r.header(b"x-request-id") for r in h.upstreams[0].received]
        assert ids == [b"req-abc.123", b"req-abc.123"]


async def test_without_a_request_id_one_is_made_and_kept_across_retries() -> None:
    """Outside a request the client makes one id per call and reuses it for its retries."""
    async with harness(sequence(503, 200, 200)) as h:
        await h.client.get("/x")
        await h.client.get("/y")
        ids = [r.header(b"x-request-id") for r in h.upstreams[0].received]
        assert ids[0] == ids[1] and ids[2] != ids[0]
        assert ids[0] is not None and len(ids[0]) == 32


async def test_traceparent_continues_the_current_trace_as_a_client_span_child() -> None:
    """Each attempt is a CLIENT span under the current span; its id is the header's parent-id."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    async with harness(sequence(503, 200), tracer=provider.get_tracer("qanat.client")) as h:
        with tracer.start_as_current_span("handler") as parent:
            await h.client.get("/x")
        spans = {s.name: s for s in exporter.get_finished_spans()}
        headers = [r.header(b"traceparent") for r in h.upstreams[0].received]
    trace_id = parent.get_span_context().trace_id
    clients = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(clients) == 2 and spans["handler"].kind is SpanKind.INTERNAL
    for span, header in zip(clients, headers, strict=True):
        ctx = span.get_span_context()
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
        assert ctx.trace_id == trace_id
        assert ctx.trace_flags.sampled
        assert header == f"00-{trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()
    assert clients[0].attributes is not None and clients[1].attributes is not None
    assert clients[0].attributes["http.response.status_code"] == 503
    assert clients[1].attributes["http.request.resend_count"] == 1


async def test_no_traceparent_without_a_trace() -> None:
    """With no current span and the no-op tracer nothing invalid is sent."""
    async with harness(status(200)) as h:
        await h.client.get("/x")
        assert h.upstreams[0].received[0].header(b"traceparent") is None


async def test_managed_headers_from_the_caller_are_replaced() -> None:
    """A caller's host, content-length or budget header cannot contradict the client's."""
    async with harness(status(200)) as h:
        await h.client.post("/x", content=b"abc", headers={
            "Host": "evil", "Content-Length": "99", "X-Qanat-Budget-Ms": "999999",
            "X-Custom": "kept"})
        got = h.upstreams[0].received[0]
        assert got.body == b"abc"
        assert [v for k, v in got.headers if k == b"host"] == [
            f"127.0.0.1:{h.upstreams[0].port}".encode()]
        assert int(got.header(b"x-qanat-budget-ms") or b"0") <= 5000
        assert got.header(b"x-custom") == b"kept"


def test_settings_from_policy_maps_timeout_retry_breaker_and_balancer() -> None:
    """A target's named timeout, retry, breaker and balancer land in its client settings."""
    policies = load_policies({
        "timeouts": {"fast": "750ms", "try": "200ms"},
        "retries": {"std": {"policy": "exponential", "duration": "50ms", "maxRetries": 4,
                            "budgetPercent": 50, "budgetMinConcurrency": 7}},
        "circuitBreakers": {"cb": {"timeout": "20s", "trip": "consecutiveFailures > 2"}},
        "targets": {"services": {"users": {"timeout": "fast", "perTryTimeout": "try",
                                           "retry": "std", "circuitBreaker": "cb",
                                           "loadBalancer": "least_request"}}},
    })
    s = settings_from_policy(policies.for_target("users"))
    assert (s.timeout, s.per_try_timeout, s.load_balancer) == (0.75, 0.2, "least_request")
    assert (s.retry.max_attempts, s.retry.base) == (5, 0.05)
    assert s.breaker.timeout == 20.0
    assert s.budget is policies.for_target("users").budget
    plain = settings_from_policy(policies.for_target("catalog"))
    assert plain == ClientSettings()


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", 0), ("timeout", float("inf")), ("per_try_timeout", -1),
     ("load_balancer", "fastest"), ("max_body", -1)],
)
def test_bad_settings_raise_config_error_naming_the_field(field: str, value: object) -> None:
    """Each invalid setting is refused with a ``ConfigError`` whose source names the field."""
    with pytest.raises(ConfigError) as caught:
        ClientSettings(**{field: value})  # type: ignore[arg-type]
    assert caught.value.source == f"ClientSettings.{field}"


ERRORS = st.sampled_from([
    ConnectError("refused"),
    PoolOverloaded("full"),
    InvalidRequest("bad header"),
    UpstreamTimeout("slow", request_sent=True),
    UpstreamTimeout("slow connect", request_sent=False),
    UpstreamReset("reset", request_sent=True),
    UpstreamReset("stale", request_sent=True, reused=True),
    UpstreamReset("reset late", request_sent=True, reused=True, response_started=True),
    UpstreamProtocolError("garbage", request_sent=True),
    BodyTooLarge("big", request_sent=True, response_started=True),
])
CONDITIONS = st.frozensets(st.sampled_from(
    ["5xx", "gateway-error", "connect-failure", "reset", "timeout", "unavailable"]))


@given(error=ERRORS, method=st.sampled_from(["POST", "PATCH"]), retry_on=CONDITIONS)
def test_a_write_without_key_is_retried_only_if_the_upstream_never_saw_it(
    error: UpstreamError, method: str, retry_on: frozenset[str]
) -> None:
    """Whatever ``retry_on`` says, an unkeyed write that may have been seen is never repeated."""
    policy = RetryPolicy(max_attempts=3, retry_on=retry_on)
    prepared = prepare(method, "/x", None, None, b"body", None, None)
    delay = retry_delay(policy, error, prepared, 1, 0.0, None, lambda: 0.5, time.time)
    if delay is not None:
        assert not error.request_sent and not isinstance(error, InvalidRequest)


@given(error=ERRORS, retry_on=CONDITIONS)
def test_errors_that_retrying_cannot_fix_are_never_retried(
    error: UpstreamError, retry_on: frozenset[str]
) -> None:
    """An invalid request or a too-large body is final; a refused connection is retried."""
    policy = RetryPolicy(max_attempts=3, retry_on=retry_on)
    prepared = prepare("GET", "/x", None, None, None, None, "key")
    delay = retry_delay(policy, error, prepared, 1, 0.0, None, lambda: 0.5, time.time)
    if isinstance(error, InvalidRequest | BodyTooLarge):
        assert delay is None
    elif isinstance(error, ConnectError) and retry_on & {
        "connect-failure", "5xx", "gateway-error", "unavailable"
    }:
        assert delay is not None  # as in Envoy, 5xx and gateway-error include connect failures


async def test_too_large_body_is_raised_and_counts_as_the_status() -> None:
    """A body over ``max_body`` raises ``BodyTooLarge``, unretried; a 200 is no breaker failure."""
    trip_at_1 = BreakerSettings(ready_to_trip=lambda c: c.consecutive_failures >= 1)
    conf = settings(max_body=10, retry=retrying(3), breaker=trip_at_1)
    async with harness(status(200, body=b"x" * 100), client_settings=conf) as h:
        for _ in range(3):
            with pytest.raises(BodyTooLarge):
                await h.client.get("/x")
        assert h.received() == 3
        assert h.client.stats()["breakers"] == {"u0": "closed"}
