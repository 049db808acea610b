"""A small upstream body that came whole is passed on as bytes; anything else streams."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from qanat.gateway.config import parse_routes
from qanat.gateway.filters import Exchange
from qanat.gateway.proxy import INLINE_BYTES, _reply
from qanat.gateway.routing import compile_routes
from qanat.http import UpstreamResponse

ROUTE = compile_routes(parse_routes([{
    "name": "r", "upstream": {"kind": "static", "targets": [{"url": "http://10.0.0.1:80"}]},
}])).routes[0]  # no header edits


def exchange(method: bytes = b"GET") -> Exchange:
    return Exchange(method, b"/", b"", [], host=b"h", authority=b"h", peer=b"p",
                    scheme=b"http", request_id=b"rid")


def response(status: int, chunks: list[bytes], *, done: bool) -> UpstreamResponse:
    source = None if done else SimpleNamespace(pause_reading=lambda: None,
                                               resume_reading=lambda: None, abort=lambda: None)
    resp = UpstreamResponse(status, b"", [(b"Content-Type", b"text/plain")], "1.1",
                            source, asyncio.get_running_loop())  # type: ignore[arg-type]
    for chunk in chunks:
        resp._feed(chunk)
    return resp


async def test_a_complete_small_body_becomes_the_reply_body() -> None:
    """A 200 whose body all arrived is a body reply (no stream, no release) with that body."""
    reply = _reply(exchange(), response(200, [b"hel", b"lo"], done=True), ROUTE)
    assert (reply.body, reply.stream, reply.release) == (b"hello", None, None)
    assert (b"content-type", b"text/plain") in reply.headers


async def test_unfinished_large_or_error_bodies_stream() -> None:
    """A body still arriving, one over the inline limit, or an upstream 4xx/5xx's, streams.

    (The server counts a 4xx/5xx body reply as an answer the gateway made itself.)
    """
    cases = [response(200, [b"part"], done=False),
             response(200, [b"x" * (INLINE_BYTES + 1)], done=True),
             response(404, [b"nope"], done=True),
             response(503, [b"busy"], done=True)]
    for resp in cases:
        reply = _reply(exchange(), resp, ROUTE)
        assert reply.body is None and reply.stream is not None and reply.release is not None
        await reply.release()
