"""One keep-alive HTTP/1.1 connection: an asyncio Protocol around ``httptools``.

A connection serves one request at a time (no pipelining). Its life:
``begin()`` arms it for a request and returns the future of the response
head; the body is fed to the :class:`UpstreamResponse`; when the message is
complete the connection hands itself back through ``on_done(conn, reusable)``.
It is reusable only when the server did not ask to close (``Connection:
close``, HTTP/1.0), the request body was fully sent, and no EOF was seen.

Not handled here: pooling (``pool.py``) and request serialisation (``wire.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from qanat.http.coalesce import for_loop
from qanat.http.deadlines import DeadlineWheel
from qanat.http.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from qanat.http.response import UpstreamResponse


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


class Connection(asyncio.Protocol):
    """An HTTP/1.1 client connection; created by the pool, one request at a time."""

    __slots__ = (
        "_body_timeout",
        "_done",
        "_drain",
        "_gone",
        "_head",
        "_head_bytes",
        "_head_only",
        "_headers",
        "_high_water",
        "_loop",
        "_max_head",
        "_out",
        "_parser",
        "_reason",
        "_response",
        "_sending",
        "_slot",
        "_stale_parser",
        "_wheel",
        "_write_paused",
        "closed",
        "got_bytes",
        "idle_since",
        "key",
        "pooled",
        "reading_paused",
        "request_sent",
        "transport",
        "uses",
    )

    def __init__(
        self,
        key: tuple[str, int],
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[Connection, bool], None],
        wheel: DeadlineWheel,
        *,
        max_head: int,
        high_water: int,
        body_timeout: float | None,
    ) -> None:
        self.key = key
        self._loop = loop
        self._out = for_loop(loop)  # the request itself goes out at the end of the loop turn
        self._done = on_done
        self._wheel = wheel
        self._max_head = max_head
        self._high_water = high_water
        self._body_timeout = body_timeout
        self._parser = HttpResponseParser(self)
        self._stale_parser = False
        self.transport: asyncio.Transport | None = None
        self.closed = False  # EOF, error or close seen: never reuse
        self._gone = False  # on_done(conn, False) was called: the slot is free
        self.uses = 0
        self.idle_since = 0.0
        self.pooled = False  # sitting in the pool's idle stack
        self.reading_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._slot = 0  # the deadline wheel slot of the head timeout; 0 when unarmed
        self._response: UpstreamResponse | None = None
        self._head_only = False
        self._sending = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_bytes = 0
        self.got_bytes = False
        self.request_sent = False

    # -- the request side ------------------------------------------------------

    def begin(self, head_only: bool, deadline: float | None) -> asyncio.Future[UpstreamResponse]:
        """Arm the connection for one request; return the future of its response head."""
        if self._stale_parser:  # a HEAD response left the old parser expecting a body
            self._parser = HttpResponseParser(self)
            self._stale_parser = False
        self.uses += 1
        self._head_only = head_only
        self._headers = []
        self._reason = b""
        self._head_bytes = 0
        self.got_bytes = False
        self.request_sent = False
        head: asyncio.Future[UpstreamResponse] = self._loop.create_future()
        self._head = head
        if deadline is not None:
            self._slot = self._wheel.add(self, deadline)
        return head

    def send(self, data: bytes | list[bytes]) -> None:
        """Send the request's head (with its body when it is small): a whole message.

        Bytes go out at the end of the loop turn with the turn's other messages
        (``coalesce.py``); a list (a head and a large body) is written at once.
        """
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise self._reset("the connection closed before the request was written")
        self.request_sent = True
        if isinstance(data, list):
            self._out.flush()
            transport.writelines(data)
        else:
            self._out.defer(transport, data)

    def write(self, data: bytes | list[bytes]) -> None:
        """Send bytes of the current request now (a list is written without joining)."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise self._reset("the connection closed before the request was written")
        self.request_sent = True
        self._out.flush()  # after anything deferred (the head)
        if isinstance(data, list):
            transport.writelines(data)
        else:
            transport.write(data)

    @property
    def head_arrived(self) -> bool:
        """True once the current request's response head is in (or the request failed)."""
        return self._head is None or self._head.done()

    def set_sending(self, sending: bool) -> None:
        """Mark a streamed request body in progress (a response that ends first forbids reuse)."""
        self._sending = sending

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._write_paused:
            return
        drain: asyncio.Future[None] = self._loop.create_future()
        self._drain = drain
        try:
            await drain
        finally:
            self._drain = None

    def abort(self) -> None:
        """Close without reuse and hand the slot back (idempotent)."""
        if self.transport is not None:
            self._out.flush()  # a deferred request still goes out before the close
            self.transport.close()
        self._lost(None)

    # -- flow control ------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- asyncio Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._response is None:
            # Bytes nobody asked for (e.g. a 408 before close): the stream is no
            # longer in step with our requests, so the connection is done.
            self.abort()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._protocol_error("101/upgrade responses are not supported")
            return
        except HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._protocol_error(f"response head exceeds {self._max_head} bytes")
            else:
                self._protocol_error(f"malformed response: {exc}")
            return
        head = self._head
        if head is not None and not head.done():
            # Bound the memory of a head that has not ended yet (one giant field
            # is accumulated by httptools before any callback sees it).
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._protocol_error(f"response head exceeds {self._max_head} bytes")

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # let the transport close; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # -- parser callbacks (httptools) ---------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            # Interim response (100 Continue, 103 Early Hints): skip, keep waiting.
            self._headers = []
            self._reason = b""
            self._head_bytes = 0
            return
        head_only = self._head_only
        response = UpstreamResponse(
            status,
            self._reason,
            self._headers,
            parser.get_http_version(),
            None if head_only else self,
            self._loop,
            self._high_water,
            self._body_timeout,
        )
        self._cancel_head_timer()
        head = self._head
        self._head = None
        if head_only:
            # A response to HEAD has no body whatever its framing says (RFC 9110
            # §9.3.2); httptools cannot be told, so this parser is dropped.
            self._stale_parser = True
            self._finish(parser.should_keep_alive())
        else:
            self._response = response
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is None:
            self.abort()  # body bytes after a HEAD response: out of step
            return
        response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None:
            return  # an interim response, or the ignored body of a HEAD response
        self._response = None
        response._end()
        self._finish(self._parser.should_keep_alive())

    # -- endings -------------------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        if self._sending:
            keep_alive = False  # the server answered before our body ended
        if self.reading_paused:
            self.resume_reading()
        if keep_alive and not self.closed:
            self._done(self, True)
        else:
            self.abort()

    def _lost(self, exc: Exception | None) -> None:
        """The transport is gone (or we closed it): fail what is in flight, free the slot."""
        if self._gone:
            return
        self._gone = True
        self.closed = True
        self._cancel_head_timer()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        response = self._response
        if response is not None:
            self._response = None
            if self._ends_at_eof(response) and exc is None:
                response._end()  # a body delimited by the close (RFC 9112 §6.3 rule 8)
            else:
                response._fail(self._reset("the connection closed in the middle of the body"))
        head = self._head
        if head is not None:
            self._head = None
            if not head.done():
                head.set_exception(self._reset("the connection closed before the response head"))
        self._done(self, False)

    def _ends_at_eof(self, response: UpstreamResponse) -> bool:
        names = {name.lower() for name, _ in response.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _protocol_error(self, message: str) -> None:
        error = UpstreamProtocolError(
            f"{self._where()}: {message}", request_sent=True, response_started=True,
            reused=self.uses > 1,
        )
        self._fail_and_close(error)

    def expire(self) -> None:
        """The head deadline passed (called by the deadline wheel)."""
        self._slot = 0
        if self._head is None or self._head.done():
            return
        error = UpstreamTimeout(
            f"{self._where()}: no response head before the timeout",
            request_sent=self.request_sent, response_started=self.got_bytes,
            reused=self.uses > 1,
        )
        self._fail_and_close(error)

    def _fail_and_close(self, error: UpstreamError) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._head = None
        if self._response is not None:
            self._response._fail(error)
            self._response = None
        self.abort()

    def _cancel_head_timer(self) -> None:
        if self._slot:
            self._wheel.remove(self, self._slot)
            self._slot = 0

    def _reset(self, message: str) -> UpstreamReset:
        return UpstreamReset(
            f"{self._where()}: {message}", request_sent=self.request_sent,
            response_started=self.got_bytes, reused=self.uses > 1,
        )

    def _where(self) -> str:
        return f"upstream {self.key[0]}:{self.key[1]}"


__all__ = ["Connection"]
