"""Small-response buffering (``buffer_response_bytes``) against real upstream servers.

An instance that sends a response head and then resets mid-body (``CUT``) must
not cost the client a cut response when the body was small enough to buffer:
the try failed before anything went downstream, so the retry rules apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_gateway_support import (
    CUT,
    STREAM,
    Backend,
    backends,
    gateway_client,
    get,
    static,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair() -> AsyncIterator[list[Backend]]:
    bs = await backends("a", "b")
    yield bs
    for b in bs:
        await b.close()


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


async def test_a_get_cut_mid_body_is_retried_on_the_healthy_instance(pair: list[Backend]) -> None:
    """A GET whose small response is cut after its head is retried and the client gets b's."""
    a, b = pair
    a.behave = lambda s: CUT
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b), "retry": {}}]
    ) as (_gw, client):
        for _ in range(4):
            reply = await client.request(get("/x"))
            assert reply.status == 200 and reply.json()["instance"] == "b"
        assert a.count() >= 1 and b.count() == 4


async def test_a_post_cut_mid_body_is_not_retried(pair: list[Backend]) -> None:
    """A POST whose response is cut after its head is answered 502 and reached one instance once."""
    a, b = pair
    a.behave = b.behave = lambda s: CUT
    async with gateway_client(
        [{"name": "r", "upstream": static(a, b),
          "retry": {"num_retries": 3, "retry_on": ["reset", "5xx"]}}]
    ) as (_gw, client):
        reply = await client.request(post("/pay", b'{"amount": 5}'))
        assert reply.status == 502
        assert a.count("POST") + b.count("POST") == 1


async def test_without_a_retry_policy_a_cut_small_body_is_a_502_not_a_cut(
        pair: list[Backend]) -> None:
    """Buffered but not retried, a cut small body becomes a clean 502 on a kept connection."""
    a, _ = pair
    a.behave = lambda s: CUT
    async with gateway_client([{"name": "r", "upstream": static(a)}]) as (_gw, client):
        assert (await client.request(get("/x"))).status == 502
        assert (await client.request(get("/y"))).status == 502  # the connection survived


async def test_buffering_off_lets_the_head_through_and_the_cut_reaches_the_client(
        pair: list[Backend]) -> None:
    """With ``buffer_response_bytes: 0`` the head streams at once, so the cut is not retried."""
    a, b = pair
    a.behave = b.behave = lambda s: CUT
    async with gateway_client([{"name": "r", "upstream": static(a, b), "retry": {},
                                "buffer_response_bytes": 0}]) as (_gw, client):
        await client.send(get("/x"))
        with pytest.raises(EOFError):
            await client.response()
        assert a.count() + b.count() == 1


async def test_a_response_larger_than_the_bound_still_streams(pair: list[Backend]) -> None:
    """A Content-Length above ``buffer_response_bytes`` is not held back: its cut is not retried."""
    a, b = pair
    a.behave = b.behave = lambda s: STREAM  # promises 1 000 000 bytes
    async with gateway_client([{"name": "r", "upstream": static(a, b), "retry": {},
                                "buffer_response_bytes": 999_999}]) as (_gw, client):
        await client.send(get("/x"))
        with pytest.raises(EOFError):
            await client.response()
        assert a.count() + b.count() == 1
