"""The buffering rule that decides whether a streamed request body can be retried."""

from __future__ import annotations

from collections.abc import AsyncIterable

from qanat.gateway.body import RequestBody
from qanat.gateway.proxy import replayable


def body(*chunks: bytes) -> RequestBody:
    b = RequestBody(lambda: None, lambda: None)
    for c in chunks:
        b.feed(c)
    b.finish()
    return b


async def collect(stream: AsyncIterable[bytes]) -> bytes:
    return b"".join([c async for c in stream])


async def test_a_small_body_is_read_whole_into_bytes() -> None:
    """A body within the bound becomes bytes, so every try can send it again."""
    got = await replayable(body(b"ab", b"cd"), [(b"content-length", b"4")], 4)
    assert got == b"abcd"


async def test_a_large_declared_body_streams_untouched() -> None:
    """A Content-Length above the bound is not read at all before the first try."""
    b = body(b"x" * 10)
    got = await replayable(b, [(b"content-length", b"10")], 4)
    assert got is b and b.buffered == 10


async def test_a_chunked_body_over_the_bound_streams_every_byte() -> None:
    """Without a length, reading stops past the bound; the stream still yields all bytes."""
    got = await replayable(body(b"abc", b"def", b"ghi"), [], 4)
    assert not isinstance(got, bytes)
    assert await collect(got) == b"abcdefghi"
    assert await replayable(body(b"ab", b"c"), [], 4) == b"abc"
