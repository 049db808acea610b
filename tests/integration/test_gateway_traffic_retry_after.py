"""Retry-After and Idempotency-Key retries against real upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_gateway_support import (
    Backend,
    backends,
    gateway_client,
    get,
    static,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def one() -> AsyncIterator[Backend]:
    (b,) = await backends("a")
    yield b
    await b.close()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


async def test_a_short_retry_after_is_waited_out_and_retried(one: Backend) -> None:
    """503 with Retry-After: 0 from the only instance: the gateway retries it and gets 200."""
    one.behave = lambda seen: 503 if one.count() == 1 else 200
    one.extra = lambda seen: b"retry-after: 0\r\n" if one.count() == 1 else b""
    async with gateway_client([{"name": "r", "upstream": static(one),
                                "retry": {"retry_on": ["5xx"]}}]) as (_gw, client):
        reply = await client.request(get("/x"))
        assert (reply.status, one.count()) == (200, 2)


async def test_a_long_retry_after_goes_to_the_client(one: Backend) -> None:
    """Retry-After: 30 is over max_retry_after: one try, and the client sees the header."""
    one.behave = lambda seen: 503
    one.extra = lambda seen: b"Retry-After: 30\r\n"
    async with gateway_client(
        [{"name": "r", "upstream": static(one),
          "retry": {"retry_on": ["5xx"], "num_retries": 3}}]
    ) as (_gw, client):
        reply = await client.request(get("/x"))
        assert (reply.status, reply.headers[b"retry-after"], one.count()) == (503, b"30", 1)


async def test_a_post_with_an_idempotency_key_is_retried(one: Backend) -> None:
    """A POST answered 503 is resent, body and key intact, when the route trusts the key."""
    one.behave = lambda seen: 503 if one.count() == 1 else 200
    async with gateway_client([{"name": "r", "upstream": static(one), "retry": {
        "retry_on": ["5xx"], "idempotency_key": True}}]) as (_gw, client):
        reply = await client.request(post("/pay", b'{"amount": 5}', "Idempotency-Key: k-1\r\n"))
        assert reply.status == 200 and one.count("POST") == 2
        assert [s.headers["idempotency-key"] for s in one.seen] == ["k-1", "k-1"]
        assert [s.body for s in one.seen] == [b'{"amount": 5}'] * 2
        reply = await client.request(post("/pay", b"{}"))  # no key: not retried
        assert reply.status == 200 and one.count("POST") == 3


async def test_without_the_route_flag_a_keyed_post_is_sent_once(one: Backend) -> None:
    """The header alone does not make a POST retryable: the route must say so."""
    one.behave = lambda seen: 503
    async with gateway_client([{"name": "r", "upstream": static(one),
                                "retry": {"retry_on": ["5xx"]}}]) as (_gw, client):
        reply = await client.request(post("/pay", b"{}", "Idempotency-Key: k-2\r\n"))
        assert (reply.status, one.count("POST")) == (503, 1)
