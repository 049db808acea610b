"""The admin endpoints and /metrics show each route's retry budget: granted and refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qanat.gateway.admin import AdminServer
from qanat.gateway.app import Gateway
from qanat.gateway.metrics import GatewayMetrics
from qanat.gateway.route_runtime import RouteRuntime
from qanat.testing import FakeClock

UPSTREAM = {"kind": "static", "targets": [{"url": f"http://10.0.0.{i}:80"} for i in (1, 2)]}
ROUTES: list[dict[str, Any]] = [
    {"name": "tight", "match": {"prefix": "/t"}, "upstream": UPSTREAM,
     "retry": {"budget_percent": 0, "min_retry_concurrency": 1}},
    {"name": "plain", "match": {"prefix": "/p"}, "upstream": UPSTREAM},
]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway(ROUTES, clock=FakeClock())
    yield gw
    await gw.aclose()


def runtime(gw: Gateway, name: str) -> RouteRuntime:
    return next(rt for rt in gw._state[1] if rt.route.name == name)


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def spend(gw: Gateway) -> None:
    """On route ``tight`` (a floor of 1): two retries asked at once, one granted, one refused;
    then one more granted once the first ended."""
    budget = runtime(gw, "tight").budget
    budget.request_started()
    budget.request_started()
    assert [budget.try_retry(), budget.try_retry()] == [True, False]
    budget.retry_finished()
    assert budget.try_retry()


async def test_upstreams_show_each_routes_retries_granted_and_refused(gateway: Gateway) -> None:
    """/upstreams: a route with a retry policy shows its budget's counts (Envoy's
    upstream_rq_retry and upstream_rq_retry_overflow); one without shows none."""
    spend(gateway)
    pages = {p["route"]: p["traffic"] for p in AdminServer(gateway).upstreams()}
    assert pages["tight"]["retry_budget"] == {
        "active_requests": 2, "active_retries": 1, "refused": 1, "granted": 2}
    assert pages["plain"]["retry_budget"] is None


async def test_metrics_count_retries_and_overflow_per_route(gateway: Gateway) -> None:
    """qanat_gateway_retries_total and qanat_gateway_retry_overflow_total, by route and
    upstream, are read from the budgets at each scrape; a route without retries has none."""
    metrics = GatewayMetrics(gateway.stats, lambda: gateway.in_flight)
    AdminServer(gateway, metrics=metrics)
    labels = (("route", "tight"), ("upstream", "static"))
    assert samples(metrics)[("qanat_gateway_retry_overflow_total", labels)] == 0
    spend(gateway)
    seen = samples(metrics)
    assert seen[("qanat_gateway_retries_total", labels)] == 2
    assert seen[("qanat_gateway_retry_overflow_total", labels)] == 1
    assert not [key for key in seen if ("route", "plain") in key[1] and "retr" in key[0]]


async def test_a_second_admin_server_does_not_register_the_families_twice(
    gateway: Gateway,
) -> None:
    """Registering the retry families again replaces them: one sample per route, not two."""
    metrics = GatewayMetrics(gateway.stats, lambda: gateway.in_flight)
    AdminServer(gateway, metrics=metrics)
    AdminServer(gateway, metrics=metrics)
    text = metrics.exposition().decode()
    assert text.count('qanat_gateway_retries_total{route="tight",upstream="static"}') == 1
