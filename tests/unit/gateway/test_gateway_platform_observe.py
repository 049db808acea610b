"""Gateway metrics (counting outcomes, exposition) and the JSON access log."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from qanat.gateway.accesslog import AccessLog
from qanat.gateway.metrics import GatewayMetrics, Outcome, error_kind
from qanat.gateway.problem import problem
from qanat.gateway.server import ServerStats

STATS = ServerStats(connections=3, requests=10, rejected={404: 2, 431: 1},
                    refused_connections=4, body_pauses=0, body_peak_bytes=0)


def _outcome(route: str = "users", status: int = 200, duration: float = 0.003,
             error: str | None = None, path: str = "/api/users/1") -> Outcome:
    return Outcome(time.time(), duration, "abc", "10.0.0.1", "GET", path, route, "users",
                   "10.0.0.5:8001", status, 12, error)


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_are_counted_per_route_upstream_and_status() -> None:
    """Each outcome adds one to its (route, upstream, status) counter."""
    metrics = GatewayMetrics(lambda: STATS, lambda: 7)
    for status in (200, 200, 503):
        metrics(_outcome(status=status))
    samples = _samples(metrics)
    key = (("route", "users"), ("status", "200"), ("upstream", "users"))
    assert samples[("qanat_gateway_requests_total", key)] == 2
    assert samples[("qanat_gateway_requests_total",
                    (("route", "users"), ("status", "503"), ("upstream", "users")))] == 1


def test_server_stats_and_in_flight_are_read_at_scrape_time() -> None:
    """Connections, in-flight and rejections by status come from the live readers."""
    metrics = GatewayMetrics(lambda: STATS, lambda: 7)
    samples = _samples(metrics)
    assert samples[("qanat_gateway_requests_in_flight", ())] == 7
    assert samples[("qanat_gateway_connections", ())] == 3
    assert samples[("qanat_gateway_rejected_total", (("status", "404"),))] == 2
    assert samples[("qanat_gateway_refused_connections_total", ())] == 4


def test_upstream_errors_are_counted_by_kind() -> None:
    """An outcome with an error kind counts in qanat_gateway_upstream_errors_total."""
    metrics = GatewayMetrics(lambda: STATS, lambda: 0)
    metrics(_outcome(status=504, error="timeout"))
    key = (("kind", "timeout"), ("route", "users"), ("upstream", "users"))
    assert _samples(metrics)[("qanat_gateway_upstream_errors_total", key)] == 1


@settings(max_examples=50)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=40))
def test_histogram_is_cumulative_and_complete(durations: list[float]) -> None:
    """Bucket counts never decrease, +Inf holds every request, and the sum adds up."""
    metrics = GatewayMetrics(lambda: STATS, lambda: 0)
    for d in durations:
        metrics(_outcome(duration=d))
    samples = _samples(metrics)
    buckets = sorted(
        ((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
         if name == "qanat_gateway_request_duration_seconds_bucket"),
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == len(durations)
    for bound, count in buckets:
        assert count == sum(1 for d in durations if d <= bound)
    total = samples[("qanat_gateway_request_duration_seconds_sum",
                     (("route", "users"), ("upstream", "users")))]
    assert abs(total - sum(durations)) < 1e-6


def test_extra_gauges_are_exposed() -> None:
    """add_gauges families are read on every scrape."""
    metrics = GatewayMetrics(lambda: STATS, lambda: 0)
    live = {"users": 2}
    metrics.add_gauges("qanat_gateway_upstream_endpoints", "doc", ["upstream"],
                       lambda: [([k], v) for k, v in live.items()])
    live["users"] = 5
    assert _samples(metrics)[("qanat_gateway_upstream_endpoints", (("upstream", "users"),))] == 5


def test_error_kind_reads_the_problem_type() -> None:
    """The kind of a proxy-made 5xx is its problem type, with the documented renames."""
    def kind(status: int, slug: str | None = None) -> str | None:
        return error_kind(status, problem(status, "x", b"rid", slug=slug).body or b"")

    assert kind(502) == "bad_gateway"
    assert kind(504) == "timeout"
    assert kind(503) == "no_endpoint"
    assert kind(503, "upstream-overloaded") == "overloaded"
    assert kind(503, "circuit-open") == "circuit_open"
    assert kind(413) is None


def _log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_access_log_writes_one_json_object_per_request(tmp_path: Path) -> None:
    """Every field of the documented format is present with the outcome's values."""
    log = AccessLog.open(str(tmp_path / "logs" / "access.log"))
    o = _outcome(status=201)
    log(o)
    log.close()
    [line] = _log_lines(tmp_path / "logs" / "access.log")
    assert line == {
        "time": line["time"], "request_id": "abc", "client": "10.0.0.1", "method": "GET",
        "path": "/api/users/1", "route": "users", "upstream": "users",
        "instance": "10.0.0.5:8001", "status": 201, "bytes": 12,
        "duration_ms": round(o.duration * 1000, 3), "error": None,
    }
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(o.started)))
    assert str(line["time"]).startswith(stamp) and str(line["time"]).endswith("Z")


@settings(max_examples=100)
@given(st.text(max_size=40), st.text(max_size=20))
def test_access_log_escapes_any_path_and_route(path: str, route: str) -> None:
    """Whatever the path and route name hold, each line is valid JSON that round-trips."""
    r, w = os.pipe()
    try:
        log = AccessLog(w)
        log(_outcome(route=route, path=path))
        data = os.read(r, 1 << 16)
    finally:
        os.close(r)
        os.close(w)
    line = json.loads(data)
    assert line["path"] == path and line["route"] == route


async def test_access_log_batches_lines_until_the_loop_turns() -> None:
    """Lines logged in one loop turn are written together on the next, whole and in order."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    log = AccessLog(w)
    try:
        for i in range(100):
            log(_outcome(path=f"/p/{i}"))
        with pytest.raises(BlockingIOError):
            os.read(r, 1)  # nothing written yet
        await asyncio.sleep(0)  # one loop turn: the flush scheduled by the first line runs
        got = os.read(r, 1 << 20)
    finally:
        log.close()
        os.close(r)
        os.close(w)
    paths = [json.loads(line)["path"] for line in got.decode().splitlines()]
    assert paths == [f"/p/{i}" for i in range(100)]


def test_an_outcome_of_bytes_reads_as_text() -> None:
    """The gateway hands over its bytes and the target; readers see the same text as ever."""
    from qanat.gateway.resolver import Target

    raw = Outcome(1.5, 0.002, b"abc", b"10.0.0.1", b"GET", b"/api/users/1", "users", "users",
                  Target("u-0", "10.0.0.5", 8001), 200, 12, None)
    assert raw == Outcome(
        1.5, 0.002, "abc", "10.0.0.1", "GET", "/api/users/1", "users", "users",
        "10.0.0.5:8001", 200, 12, None)
    assert (raw.request_id, raw.client, raw.method, raw.path, raw.instance) == (
        "abc", "10.0.0.1", "GET", "/api/users/1", "10.0.0.5:8001")
    assert Outcome(0, 0, b"", b"", b"", b"", "r", "u", None, 404, 0, None).instance == ""
    assert "instance='10.0.0.5:8001'" in repr(raw)
