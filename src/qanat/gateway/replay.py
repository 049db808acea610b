"""Making a streamed request body replayable, so a retry can send it again.

With a retry policy, a body of at most ``retry.max_buffered_body`` bytes is
read whole before the first try (Envoy buffers for the same reason, up to its
per-request buffer limit); a larger one streams straight through and is
retried only when the upstream never saw a byte of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from qanat.gateway.body import RequestBody
from qanat.gateway.filters import HeaderList


def _content_length(headers: HeaderList) -> int | None:
    for k, v in headers:
        if k == b"content-length":
            return int(v)
    return None


async def replayable(body: RequestBody, headers: HeaderList,
                     limit: int) -> bytes | AsyncIterable[bytes]:
    """The body as bytes when it is at most ``limit`` bytes (so a retry can resend it),
    else a stream of it (read up to ``limit`` first when its length is unknown)."""
    length = _content_length(headers)
    if length is not None and length > limit:
        return body  # too big to hold: stream it, retry only before any byte is sent
    chunks: list[bytes] = []
    size = 0
    it = body.__aiter__()
    async for chunk in it:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return _chain(chunks, it)
    return b"".join(chunks)


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


__all__ = ["replayable"]
