"""Outgoing-side metrics of a service: breaker states and pool statistics, read on scrape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from tests.servers import StreamServer

from qanat.backends import open_registry
from qanat.ports import Instance
from qanat.runtime.service import Service


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
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

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
    dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = dead.sockets[0].getsockname()[1]
    dead.close()
    await dead.wait_closed()  # nothing listens on the port now: connections are refused
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
