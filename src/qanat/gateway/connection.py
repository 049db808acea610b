"""One client connection: parse with httptools, validate, queue, answer in order.

See ``server.py`` for the lifecycle rules this implements. Every request head
is checked by ``hardening.check_head`` before anything else sees it; a
rejection is answered after the responses already owed, then the connection
closes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, NoReturn, cast

import httptools

from qanat.gateway.body import RequestBody
from qanat.gateway.filters import Reply
from qanat.gateway.hardening import RequestRejected, check_head, parse_error
from qanat.gateway.headers import request_id_for
from qanat.gateway.problem import problem
from qanat.gateway.request import App, Request
from qanat.gateway.writer import write_reply, write_whole
from qanat.http.coalesce import for_loop

if TYPE_CHECKING:
    from qanat.gateway.server import HttpServer

IDLE, HEADERS, BODY, LINGER = 1, 2, 3, 4
LINGER_SECONDS = 2.0  # nginx lingering_timeout is 5 s; an error answer needs only a moment
_NO_BODY = frozenset((204, 304))
_OVER_CAP_BODY = (
    b'{"type":"urn:qanat:problem:too-many-connections","title":"Service Unavailable",'
    b'"status":503,"detail":"the gateway is at its connection cap; retry later"}'
)
_OVER_CAP = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_OVER_CAP_BODY), _OVER_CAP_BODY)
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _NoCallbacks:
    """The callbacks of the parser a closed connection keeps: none (it is fed nothing)."""


_CLOSED_PARSER = httptools.HttpRequestParser(_NoCallbacks())


class HttpProtocol(asyncio.Protocol):
    """The state of one client connection (see ``server.py`` for the rules)."""

    def __init__(self, server: HttpServer) -> None:
        self._srv = server
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._peer = b""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_room = 0  # bytes the request head may still take (max_header_bytes)
        self._max_headers = server.limits.max_headers
        self._in_head = False
        self._current: Request | None = None  # the request whose body is being parsed
        self._queue: deque[Request | RequestRejected] = deque()
        self._loop = asyncio.get_running_loop()
        self._out = for_loop(self._loop)  # whole replies go out at the end of the loop turn
        self._task: asyncio.Task[None] | None = None  # serves this connection's requests
        self._next: asyncio.Future[None] | None = None  # the task waits here between requests
        self._busy = False  # a request is being answered
        self._error: RequestRejected | None = None
        self._closing = False  # no more parsing
        self._pipe_paused = False
        self._body_pauses = 0
        self._reading = True
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self._deadline_kind = 0
        self.served = 0

    # -- connection events --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        srv = self._srv
        if len(srv.connections) >= self._limits.max_connections or srv.draining:
            srv.refused += 1
            self._closing = True
            transport.write(_OVER_CAP)
            transport.close()
            return
        srv.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]).encode() if isinstance(peer, tuple) else b"unix"
        self._arm(HEADERS, self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        # Break the cycles (parser -> our bound methods -> us -> parser; transport <-> us)
        # so a closed connection is freed at once, not left to the cyclic GC.
        self._parser = _CLOSED_PARSER
        self._transport = None
        self._srv.forget(self)
        cur = self._current
        if cur is not None and cur.body is not None:
            cur.body.fail(RequestRejected(400, "the client closed the connection"))
        if self._task is not None:
            self._task.cancel()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("client closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._reject(self._error or RequestRejected(500, f"internal error: {exc}"))
        except httptools.HttpParserUpgrade:
            self._on_upgrade()
        except httptools.HttpParserError as exc:
            self._reject(parse_error(exc))

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        limits = self._limits
        self._url = b""
        self._headers = []
        self._head_room = limits.max_header_bytes  # bytes of head still allowed
        self._in_head = True
        self._deadline_kind = HEADERS
        self.deadline = self._srv.clock() + limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_room -= len(url)
        if len(self._url) > self._limits.max_url_bytes:
            self._fail(RequestRejected(414, f"the request target is over "
                                            f"{self._limits.max_url_bytes} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        self._head_room -= len(name) + len(value) + 4
        if self._head_room < 0 or len(headers) >= self._max_headers:
            self._head_too_large()
        headers.append((name.lower(), value))

    def _head_too_large(self) -> NoReturn:
        limits = self._limits
        if self._head_room < 0:
            self._fail(RequestRejected(431, f"the request head is over "
                                            f"{limits.max_header_bytes} bytes"))
        self._fail(RequestRejected(431, f"more than {limits.max_headers} header lines"))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        try:
            head = check_head(version, self._headers, self._limits.max_body_bytes)
        except RequestRejected as exc:
            self._fail(exc)
        body = None
        if head.chunked or head.content_length:
            send_continue = self._send_continue if head.expect_continue else None
            body = RequestBody(self._pause_body, self._resume_body, send_continue)
            self._arm(BODY, self._limits.body_timeout)
        else:
            self.deadline = 0.0
        req = Request(parser.get_method(), self._url, self._headers, head, version,
                      parser.should_keep_alive(), body, self._peer, self._srv.scheme)
        self._current = req
        self._enqueue(req)

    def on_body(self, chunk: bytes) -> None:
        cur = self._current
        assert cur is not None and cur.body is not None
        body = cur.body
        if body.buffered + len(chunk) > self._srv.body_peak:
            self._srv.body_peak = body.buffered + len(chunk)
        if body.received + len(chunk) > self._limits.max_body_bytes:
            self._fail(RequestRejected(413, f"the body is over the limit of "
                                            f"{self._limits.max_body_bytes} bytes"))
        body.feed(chunk)
        if self._deadline_kind == BODY and self._reading:
            self.deadline = self._srv.clock() + self._limits.body_timeout

    def on_message_complete(self) -> None:
        cur = self._current
        if cur is not None and cur.body is not None:
            cur.body.finish()
        self._current = None
        if self._deadline_kind == BODY:
            self.deadline = 0.0

    # -- errors, deadlines, flow control -------------------------------------------

    def _fail(self, exc: RequestRejected) -> NoReturn:
        """Raise from a callback: httptools stops parsing, ``data_received`` rejects."""
        self._error = exc
        raise exc

    def _reject(self, exc: RequestRejected) -> None:
        self._closing = True
        self.deadline = 0.0
        if self._transport is not None:
            self._transport.pause_reading()
        cur = self._current
        if cur is not None and cur.body is not None and not cur.body.done:
            cur.body.fail(exc)  # its handler answers, then the connection closes
        else:
            self._enqueue(exc)

    def _on_upgrade(self) -> None:
        """llhttp stops at ``Connection: upgrade`` and CONNECT; we upgrade nothing.

        A bodiless upgrade request is served as a plain request (Upgrade is
        hop-by-hop and never forwarded), then the connection closes.
        """
        last = self._queue[-1] if self._queue else None
        req = last if isinstance(last, Request) else None
        if req is None or req.method == b"CONNECT" or req.body is not None:
            if req is not None:
                self._queue.pop()  # queued by this very feed_data call: not started yet
            self._reject(RequestRejected(501, "CONNECT and protocol upgrades are not supported"))
            return
        req.keep_alive = False
        self._closing = True
        if self._transport is not None:
            self._transport.pause_reading()

    def _arm(self, kind: int, seconds: float) -> None:
        self._deadline_kind = kind
        self.deadline = self._srv.clock() + seconds

    def on_deadline(self) -> None:
        """Called by the server's sweep when ``deadline`` has passed."""
        kind = self._deadline_kind
        self.deadline = 0.0
        if kind == HEADERS and self._in_head:
            self._reject(RequestRejected(408, "the request head did not arrive in time"))
        elif kind == BODY:
            self._reject(RequestRejected(408, "the request body stalled"))
        elif not self._busy:
            self.close()  # idle keep-alive, or a connection that never sent a byte

    def _pause_body(self) -> None:
        self._srv.body_pauses += 1
        self._body_pauses += 1
        self._set_reading()

    def _resume_body(self) -> None:
        self._body_pauses -= 1
        self._set_reading()

    def _set_reading(self) -> None:
        want = not self._pipe_paused and self._body_pauses <= 0 and not self._closing
        if want == self._reading or self._transport is None:
            return
        self._reading = want
        if want:
            self._transport.resume_reading()
            if self._deadline_kind == BODY and self._current is not None:
                self.deadline = self._srv.clock() + self._limits.body_timeout
        else:
            self._transport.pause_reading()
            if self._deadline_kind == BODY:
                self.deadline = 0.0  # we are not reading: the client is not slow

    def _send_continue(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self.write(_CONTINUE)

    def send(self, data: bytes) -> None:
        """Send a whole reply at the end of this loop turn (see ``http/coalesce.py``)."""
        if self._transport is not None:
            self._out.defer(self._transport, data)

    def write(self, data: bytes) -> None:
        """Write now, after anything deferred (stream chunks, interim answers)."""
        if self._transport is not None:
            self._out.flush()
            self._transport.write(data)

    def close_if_idle(self) -> None:
        if not self._busy and not self._in_head:
            self.close()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._out.flush()  # a deferred reply still goes out before the FIN
            self._transport.close()

    def linger(self) -> None:
        """Close after an error without losing the answer (nginx's lingering close).

        Closing a socket that still has unread input makes the kernel send an
        RST, which can destroy our 4xx before the client reads it. So: send
        FIN, keep reading and dropping input for up to ``LINGER_SECONDS``,
        then close (the client usually closes first when it sees the FIN).
        """
        self._closing = True
        t = self._transport
        if t is None or t.is_closing():
            return
        self._out.flush()
        if not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        t.resume_reading()
        self._arm(LINGER, LINGER_SECONDS)

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._out.flush()  # a reply deferred before a failed stream still goes out
            self._transport.abort()

    # -- answering ---------------------------------------------------------------

    def _enqueue(self, item: Request | RequestRejected) -> None:
        self._queue.append(item)
        if self._busy:
            if len(self._queue) > self._limits.max_pipelined and not self._pipe_paused:
                self._pipe_paused = True
                self._set_reading()
            return
        self._busy = True
        wake = self._next
        if wake is not None:
            self._next = None
            wake.set_result(None)
        elif self._task is None:
            self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        """Answer queued requests in order for the life of the connection.

        One task per connection, not one per request: between keep-alive
        requests it waits on a future, which costs less than a new task
        (no coroutine, no registration in asyncio's task set). Each request
        is answered inline here, not in a coroutine of its own.
        """
        try:
            while True:
                queue = self._queue
                while queue:
                    item = queue.popleft()
                    if self._pipe_paused and len(queue) <= self._limits.max_pipelined // 2:
                        self._pipe_paused = False
                        self._set_reading()
                    if isinstance(item, RequestRejected):
                        await self._refuse(item)
                        return
                    observer = self._srv.observer
                    try:
                        if observer is not None:
                            observer.begin(item)
                        reply = await self._srv.app(item)
                    except asyncio.CancelledError:
                        if observer is not None:
                            observer.abandon(item)
                        raise
                    except Exception as exc:  # a bug in a filter must not kill the connection
                        reply = problem(500, f"internal error: {type(exc).__name__}",
                                        request_id_for(item.headers), close=True)
                    if observer is not None:
                        observer.end(item, reply)
                    keep = self._keep(item, reply)
                    kept = write_whole(self, item, reply, keep=keep)
                    if kept is None:
                        kept = await write_reply(self, item, reply, keep=keep)
                    if not kept:
                        self._end(item)
                        return
                if self._closing:
                    return
                self._busy = False
                if not self._in_head:
                    self._arm(IDLE, self._limits.idle_timeout)
                self._next = self._loop.create_future()
                await self._next
        finally:
            self._task = None
            self._busy = False

    async def _refuse(self, item: RequestRejected) -> None:
        """Answer a request refused while parsing, then close after it."""
        reply = problem(item.status, item.detail, request_id_for(self._headers), close=True)
        self._srv.rejected[item.status] = self._srv.rejected.get(item.status, 0) + 1
        await write_reply(self, None, reply, keep=False)
        self.linger()

    def _keep(self, req: Request, reply: Reply) -> bool:
        """Count the answer; whether the connection stays open after it."""
        srv = self._srv
        body = req.body
        srv.requests += 1
        self.served += 1
        if reply.status >= 400 and reply.stream is None:
            srv.rejected[reply.status] = srv.rejected.get(reply.status, 0) + 1
        return (req.keep_alive and not reply.close and not srv.draining and not self._closing
                and (body is None or (body.done and body.error is None)))

    def _end(self, req: Request) -> None:
        """Close after the last answer: lingering when input may be left unread."""
        body = req.body
        unread = body is not None and (not body.done or body.error is not None)
        if unread or self._queue or self._error is not None:
            self.linger()
        else:
            self.close()

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark."""
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None


__all__ = ["App", "HttpProtocol", "Request"]
