"""Turn a request into bytes to write, and stream a request body with back-pressure."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from typing import Protocol

from qanat.http.errors import InvalidRequest
from qanat.http.wire import (
    CHUNKED,
    LAST_CHUNK,
    LENGTH,
    NO_BODY,
    encode_head,
    frame_chunk,
    prepare_headers,
)

Body = bytes | bytearray | memoryview | AsyncIterable[bytes] | None

# A bytes body up to this size is joined to the head: one write, one segment.
_JOIN_LIMIT = 64 * 1024


class StreamSink(Protocol):
    """The connection side of a streamed upload."""

    @property
    def head_arrived(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes | list[bytes]) -> None: ...

    def set_sending(self, sending: bool) -> None: ...

    async def drain(self) -> None: ...


def encode_request(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: Body,
    host: str,
    port: int,
) -> tuple[bytes | list[bytes], AsyncIterable[bytes] | None, int, int | None]:
    """(what to write first, the stream to send after it, framing, content length)."""
    if body is None:
        kind, size = NO_BODY, 0
    elif isinstance(body, bytes | bytearray | memoryview):
        kind, size = LENGTH, len(body)
    elif isinstance(body, AsyncIterable):
        kind, size = CHUNKED, 0
    else:
        raise InvalidRequest(
            f"body of type {type(body).__name__}: pass None, bytes or an AsyncIterable[bytes]"
        )
    fields, framing, length = prepare_headers(headers, host, port, kind, size)
    head = encode_head(method, target, fields)
    if kind == NO_BODY:
        return head, None, NO_BODY, None
    if kind == LENGTH:
        assert isinstance(body, bytes | bytearray | memoryview)
        payload = bytes(body)
        if framing == CHUNKED:  # the caller asked for chunked: one chunk, then the end
            return [head, *frame_chunk(payload), LAST_CHUNK], None, CHUNKED, None
        if size <= _JOIN_LIMIT:
            return head + payload, None, LENGTH, length
        return [head, payload], None, LENGTH, length
    assert isinstance(body, AsyncIterable)
    return head, body, framing, length


async def send_stream(
    sink: StreamSink, stream: AsyncIterable[bytes], framing: int, length: int | None
) -> None:
    """Send ``stream`` as the request body, waiting for the socket when it is full.

    Stops early, quietly, when the response head arrives first (e.g. a 413): the
    connection is then not reused. A content-length body whose stream yields a
    different number of bytes raises :class:`InvalidRequest` (the connection
    is closed by the caller, since its framing is broken).
    """
    sink.set_sending(True)
    sent = 0
    async for chunk in stream:
        if sink.head_arrived or sink.closed:
            return  # still "sending": the connection will not be reused
        if not chunk:
            continue  # an empty chunk would end a chunked body
        sent += len(chunk)
        if framing == CHUNKED:
            sink.write(frame_chunk(bytes(chunk)))
        else:
            if length is not None and sent > length:
                raise InvalidRequest(
                    f"the body stream yielded more than its content-length {length}",
                    request_sent=True,
                )
            sink.write(bytes(chunk))
        await sink.drain()
    if sink.head_arrived or sink.closed:
        return
    if framing == CHUNKED:
        sink.write(LAST_CHUNK)
    elif sent != length:
        raise InvalidRequest(
            f"the body stream ended after {sent} bytes; content-length said {length}",
            request_sent=True,
        )
    sink.set_sending(False)


__all__ = ["Body", "StreamSink", "encode_request", "send_stream"]
