"""The response of an upstream call: head fields now, body read or streamed later.

The body is fed by the connection as it arrives. Memory is bounded by
back-pressure: when more than ``high_water`` bytes wait unread, the connection
stops reading from the socket (``transport.pause_reading``) until the
consumer brings the buffer under ``high_water // 4`` (the watermark pair
asyncio's own flow control uses). The connection goes back to the pool as soon
as the whole message has arrived, whether or not the body was consumed yet.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from qanat.http.errors import BodyTooLarge, UpstreamError, UpstreamTimeout


class BodySource(Protocol):
    """What a response needs from the connection feeding it."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def abort(self) -> None:
        """Close the connection without reuse (the body will not be read)."""
        ...


class UpstreamResponse:
    """Status, reason, headers (names as received, in order) and a body to read once.

    Consume the body with :meth:`read` or :meth:`iter_chunks`, or release it
    with :meth:`aclose` (``async with resp:`` does that); a response left half
    read keeps its connection busy.
    """

    __slots__ = (
        "_body_timeout",
        "_chunks",
        "_closed",
        "_done",
        "_error",
        "_high",
        "_loop",
        "_size",
        "_source",
        "_waiter",
        "headers",
        "http_version",
        "reason",
        "request_sent",
        "status",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        source: BodySource | None,
        loop: asyncio.AbstractEventLoop,
        high_water: int = 256 * 1024,
        body_timeout: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.http_version = http_version
        self.request_sent = True
        self._source = source
        self._loop = loop
        self._high = high_water
        self._body_timeout = body_timeout
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = source is None
        self._closed = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason.decode('latin-1')!r}>"

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet consumed (bounded by back-pressure)."""
        return self._size

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived (it may still be buffered here)."""
        return self._done

    # -- fed by the connection -------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._high and self._source is not None:
            self._source.pause_reading()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self) -> None:
        self._done = True
        self._source = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._done or self._error is not None:
            return  # the first cause wins (a timeout, not the close it triggers)
        self._error = error
        self._source = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- consumed by the caller ------------------------------------------------

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body. Raises :class:`BodyTooLarge` beyond ``max_bytes`` (and drops it)."""
        self._check_open()
        if self._done and (max_bytes is None or self._size <= max_bytes):
            chunks = self._chunks  # fast path: the body came with the head
            self._chunks = deque()
            self._size = 0
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        parts: list[bytes] = []
        total = 0
        try:
            while True:
                if self._chunks:
                    parts.extend(self._chunks)
                    total += self._size
                    self._chunks.clear()
                    self._size = 0
                    if self._source is not None:
                        self._source.resume_reading()
                if max_bytes is not None and total > max_bytes:
                    self._release()
                    raise BodyTooLarge(
                        f"response body exceeds max_bytes={max_bytes}", request_sent=True,
                        response_started=True,
                    )
                if self._done:
                    return b"".join(parts)
                await self._wait()
        except asyncio.CancelledError:
            # What was read so far is gone with this frame: the body can never be
            # completed, so the connection must not wait for a reader (wait_for).
            self._release()
            raise

    def take_complete(self, max_bytes: int) -> bytes | None:
        """The whole body at once, without waiting, when it has all arrived and is at
        most ``max_bytes``; the response is then released. Else None (nothing taken)."""
        if not self._done or self._closed or self._error is not None or self._size > max_bytes:
            return None
        chunks = self._chunks
        self._chunks = deque()
        self._size = 0
        self._closed = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def wait_complete(self) -> None:
        """Wait until the whole body has arrived, keeping it buffered here (nothing is
        consumed: ``take_complete``, ``read`` or ``iter_chunks`` still see all of it).

        Back-pressure is lifted while waiting, so bound the body first (e.g. by its
        ``Content-Length``). Raises the body's error (``UpstreamReset``, a body
        timeout); cancelled, it releases the response, whose body is then gone.
        """
        self._check_open()
        try:
            while not self._done:
                if self._source is not None:
                    self._source.resume_reading()
                await self._wait()
        except BaseException:
            self._release()
            raise

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk; the connection is released at its end."""
        self._check_open()
        return _Chunks(self)

    async def _next_chunk(self) -> bytes | None:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._source is not None and self._size <= self._high // 4:
                    self._source.resume_reading()
                return chunk
            if self._done:
                return None
            await self._wait()

    async def _wait(self) -> None:
        # The error is read into a local each time, never re-tested on the attribute:
        # mypy keeps ``self._error`` narrowed to None across the ``await`` below, and
        # compiled with mypyc that narrowing would be checked (and fail) at run time.
        error = self._error
        if error is not None:
            raise error
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter = waiter
        timer = None
        if self._body_timeout is not None:
            timer = self._loop.call_later(self._body_timeout, self._on_body_timeout, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        error = self._error
        if error is not None:
            raise error

    def _on_body_timeout(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            return
        source = self._source
        self._fail(
            UpstreamTimeout(
                f"no body byte for {self._body_timeout}s", request_sent=True,
                response_started=True,
            )
        )
        if source is not None:
            source.abort()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the response was closed (aclose); its body is gone")

    async def aclose(self) -> None:
        """Release the response; an unfinished body closes its connection (never reused)."""
        self._release()

    def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        source = self._source
        self._chunks.clear()
        self._size = 0
        if not self._done:
            self._fail(UpstreamError("the response was closed", request_sent=True))
            if source is not None:
                source.abort()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Chunks:
    """Async iterator over a response body (a class, not a generator: no aclose needed)."""

    __slots__ = ("_response",)

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._response._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


__all__ = ["BodySource", "UpstreamResponse"]
