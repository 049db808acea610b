"""Outgoing-side metrics of a service: breaker states, bulkheads, adaptive throttles and pool
statistics, read on scrape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from tests.servers import StreamServer

from qanat.backends import open_registry
from qanat.errors import Overloaded
from qanat.ports import Instance
from qanat.runner.env import InstanceEnv
from qanat.runtime.service import Service
from qanat.testing import eventually, free_port


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Service.start configures process-wide logging; put it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    """A real keep-alive HTTP/1.1 server answering 200 'ok' to every request; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):  # until the client closes
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with StreamServer(handle) as server:
        yield server.port


def sample(service: Service, name: str, **labels: str) -> float | None:
    return service.metrics.registry.get_sample_value(name, {"service": "orders", **labels})


async def test_breaker_states_and_pool_statistics_are_scraped(upstream: int) -> None:
    """After two calls to a live instance and one to a dead one, the scrape shows each
    instance's breaker state and the pool's connections, requests and reuse."""
    url = f"memory://{uuid.uuid4().hex}"
    app = FastAPI()
    service = Service(app, "orders", registry_url=url, tracer_provider=TracerProvider(),
                      json_logs=False)  # fmt: skip
    catalog = service.client("catalog")
    registry = await open_registry(url)
    await registry.register(Instance("catalog-0", "catalog", "127.0.0.1", upstream), ttl=30)
    async with app.router.lifespan_context(app):
        assert service.discovery is not None
        await service.discovery.wait_ready("catalog")
        assert (await catalog.get("/a")).status == 200
        assert (await catalog.get("/b")).status == 200
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            text = (await client.get("/metrics")).text
        closed = sample(service, "qanat_client_breaker_state", target="catalog",
                        instance="catalog-0", state="closed")  # fmt: skip
        open_ = sample(service, "qanat_client_breaker_state", target="catalog",
                       instance="catalog-0", state="open")  # fmt: skip
        opened = sample(service, "qanat_client_pool_connections_opened_total")
        reused = sample(service, "qanat_client_pool_requests_total", reused="true")
        fresh = sample(service, "qanat_client_pool_requests_total", reused="false")
        idle = sample(service, "qanat_client_pool_connections", state="idle")
    await registry.close()
    assert (closed, open_) == (1.0, 0.0)
    assert (opened, reused, fresh, idle) == (1.0, 1.0, 1.0, 1.0)
    assert "# TYPE qanat_client_breaker_state gauge" in text
    assert "# TYPE qanat_client_pool_requests_total counter" in text


async def test_an_open_breaker_shows_as_open() -> None:
    """Calls to an instance that refuses connections trip its breaker; the gauge says open."""
    url = f"memory://{uuid.uuid4().hex}"
    app = FastAPI()
    service = Service(app, "orders", registry_url=url, tracer_provider=TracerProvider(),
                      json_logs=False)  # fmt: skip
    catalog = service.client("catalog")
    port = free_port()  # nothing listens there: connections are refused
    registry = await open_registry(url)
    await registry.register(Instance("catalog-0", "catalog", "127.0.0.1", port), ttl=30)
    async with app.router.lifespan_context(app):
        assert service.discovery is not None
        await service.discovery.wait_ready("catalog")
        threshold = catalog.settings.breaker
        for _ in range(20):
            with contextlib.suppress(Exception):  # refused, then circuit open: both expected
                await catalog.get("/x")
            state = sample(service, "qanat_client_breaker_state", target="catalog",
                           instance="catalog-0", state="open")  # fmt: skip
            if state == 1.0:
                break
        assert state == 1.0, threshold
    await registry.close()


# -- bulkheads and adaptive throttles, from the topology's policies ----------------------

TOPOLOGY = """\
name: shop
services:
  orders:
    app: orders.app:app
policies:
  bulkheads:
    one: {maxConcurrent: 1, maxQueue: 1}
  throttles:
    sre: {k: 2, window: 1m}
  targets:
    services:
      catalog: {bulkhead: one}
      risk: {throttle: sre}
"""

BULKHEAD = (
    "qanat_client_bulkhead_in_use",
    "qanat_client_bulkhead_max_concurrent",
    "qanat_client_bulkhead_queued",
    "qanat_client_bulkhead_max_queue",
    "qanat_client_bulkhead_rejected_total",
)
THROTTLE = ("qanat_client_throttle_rejected_total", "qanat_client_throttle_reject_ratio")


def run_by_qanat(tmp_path: Path, url: str) -> Service:
    """``orders`` as ``qanat up`` runs it: its env names the topology, whose policies give
    ``catalog`` a bulkhead (one slot, one place in the queue) and ``risk`` a throttle."""
    topology = tmp_path / "qanat.yaml"
    topology.write_text(TOPOLOGY)
    env = InstanceEnv(service="orders", instance_id="orders-0", host="127.0.0.1", port=1,
                      registry=url, config=url, events="", database_url="",
                      state_dir=str(tmp_path), topology=str(topology))  # fmt: skip
    return Service(FastAPI(), "orders", env=env, tracer_provider=TracerProvider(),
                   json_logs=False)  # fmt: skip


class Gate:
    """A keep-alive HTTP/1.1 server that holds each request until ``open`` is set, then
    answers 200; ``arrived`` counts the requests it read."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrived = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            self.arrived += 1
            await self.open.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()


class Refusing:
    """A keep-alive HTTP/1.1 server answering 429 (refusing for load) to every request."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            self.received += 1
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n\r\nbusy")
            await writer.drain()


async def scrape(service: Service) -> str:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return (await client.get("/metrics")).text


def values(service: Service, names: tuple[str, ...], target: str) -> list[float | None]:
    return [sample(service, name, target=target) for name in names]


async def test_bulkhead_slots_queue_and_refusals_are_scraped(tmp_path: Path) -> None:
    """One slot, one place in the queue: while a call holds the slot, a call whose deadline
    passes in the queue and a call that finds the queue full are refused; the scrape shows
    the slot in use, the queued call, both limits and the two refusals, then the slot and
    the queue emptied; a target without a bulkhead has no bulkhead series."""
    url = f"memory://{uuid.uuid4().hex}"
    service = run_by_qanat(tmp_path, url)
    catalog, _ = service.client("catalog"), service.client("risk")
    gate = Gate()
    registry = await open_registry(url)
    async with StreamServer(gate) as server:
        await registry.register(Instance("catalog-0", "catalog", "127.0.0.1", server.port),
                                ttl=30)  # fmt: skip
        async with service.app.router.lifespan_context(service.app):
            assert service.discovery is not None
            await service.discovery.wait_ready("catalog")
            before = values(service, BULKHEAD, "catalog")
            holder = asyncio.create_task(catalog.get("/hold"))
            await eventually(lambda: gate.arrived == 1, what="the first call at the upstream")
            with pytest.raises(Overloaded, match="deadline"):
                await catalog.get("/late", timeout=0.05)  # queued, then out of time
            queued = asyncio.create_task(catalog.get("/queued"))
            in_queue = "qanat_client_bulkhead_queued"
            await eventually(
                lambda: sample(service, in_queue, target="catalog") == 1.0,
                what="the second call queued",
            )
            with pytest.raises(Overloaded, match="full"):
                await catalog.get("/full")
            during = values(service, BULKHEAD, "catalog")
            text = await scrape(service)
            gate.open.set()
            assert (await holder).status == 200 and (await queued).status == 200
            after = values(service, BULKHEAD, "catalog")
            risk = values(service, BULKHEAD, "risk")
    await registry.close()
    assert before == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert during == [1.0, 1.0, 1.0, 1.0, 2.0]
    assert after == [0.0, 1.0, 0.0, 1.0, 2.0]
    assert gate.arrived == 2  # the refused calls were never sent
    assert risk == [None] * len(BULKHEAD)
    assert 'qanat_client_bulkhead_rejected_total{service="orders",target="catalog"} 2.0' in text
    assert "# TYPE qanat_client_bulkhead_rejected_total counter" in text
    assert "# TYPE qanat_client_bulkhead_in_use gauge" in text


async def test_throttle_sheds_and_reject_ratio_are_scraped(tmp_path: Path) -> None:
    """An instance answering 429 to everything: the throttle starts shedding; the scrape
    counts exactly the attempts shed and shows the SRE reject probability, n / (n + 1) after
    n attempts none accepted (k = 2); a target without a throttle has no throttle series."""
    url = f"memory://{uuid.uuid4().hex}"
    service = run_by_qanat(tmp_path, url)
    risk, _ = service.client("risk"), service.client("catalog")
    refusing = Refusing()
    registry = await open_registry(url)
    async with StreamServer(refusing) as server:
        await registry.register(Instance("risk-0", "risk", "127.0.0.1", server.port), ttl=30)
        async with service.app.router.lifespan_context(service.app):
            assert service.discovery is not None
            await service.discovery.wait_ready("risk")
            before = values(service, THROTTLE, "risk")
            sent = shed = 0
            for _ in range(200):  # the chance of shedding grows to n / (n + 1)
                try:
                    assert (await risk.get("/score")).status == 429  # not retried
                    sent += 1
                except Overloaded:
                    shed += 1
                    if shed == 3:
                        break
            rejected, ratio = values(service, THROTTLE, "risk")
            catalog = values(service, THROTTLE, "catalog")
            text = await scrape(service)
    await registry.close()
    n = sent + shed  # a shed attempt counts as a request not accepted, as in the SRE book
    assert before == [0.0, 0.0]
    assert shed == 3 and refusing.received == sent
    assert rejected == 3.0
    assert ratio == pytest.approx(n / (n + 1))
    assert catalog == [None, None]
    assert "# TYPE qanat_client_throttle_rejected_total counter" in text
    assert "# TYPE qanat_client_throttle_reject_ratio gauge" in text
