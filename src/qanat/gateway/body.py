"""A request body streamed from the client connection to the upstream, with back-pressure.

The protocol feeds chunks as llhttp parses them; the proxy (through the
upstream client) consumes them with ``async for``. When more than
``high_water`` bytes wait unconsumed the connection stops reading from the
socket (``pause``), and reading resumes once the consumer has drained the
buffer below ``low_water``, so a large upload is never held whole: at most
about ``high_water`` plus one socket read is buffered. ``stats`` counts the
bytes buffered at peak and the pauses, for tests and metrics.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from qanat.gateway.hardening import RequestRejected

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class RequestBody:
    """Chunks of one request body; iterate once. ``fail`` makes the reader raise."""

    __slots__ = (
        "_chunks",
        "_continue",
        "_pause",
        "_paused",
        "_resume",
        "_waiter",
        "buffered",
        "done",
        "error",
        "pauses",
        "peak",
        "received",
    )

    def __init__(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        send_continue: Callable[[], None] | None = None,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._pause = pause
        self._resume = resume
        self._continue = send_continue  # write "100 Continue" on first read
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.buffered = 0
        self.received = 0
        self.peak = 0
        self.pauses = 0
        self.done = False
        self.error: RequestRejected | None = None

    def feed(self, chunk: bytes) -> None:
        """Called by the protocol for each parsed piece of body."""
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        self.received += len(chunk)
        if self.buffered > self.peak:
            self.peak = self.buffered
        if self.buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self.pauses += 1
            self._pause()
        self._wake()

    def finish(self) -> None:
        """The whole body has arrived."""
        self.done = True
        self._wake()

    def fail(self, error: RequestRejected) -> None:
        """The body cannot be completed (too large, too slow, client gone)."""
        if not self.done:
            self.error = error
            self.done = True
            self._wake()

    def take_all(self) -> bytes:
        """The complete body at once (only when ``done`` and no error)."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.buffered = 0
        return data

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        if self._continue is not None:
            self._continue()
            self._continue = None
        while True:
            if self.error is not None:
                raise self.error
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self._paused and self.buffered <= LOW_WATER:
                    self._paused = False
                    self._resume()
                yield chunk
                continue
            if self.done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


__all__ = ["HIGH_WATER", "LOW_WATER", "RequestBody"]
