"""A keep-alive connection pool per (host, port), and the request call.

Pooling rules (documented in ``docs/http-client.md``):

- Idle connections are a LIFO stack: the most recently used (warm, least
  likely to have been closed by the server) goes out first; the coldest sit
  at the bottom, where the idle sweep closes them after ``idle_timeout``.
- At most ``max_connections_per_host`` connections (idle, busy or connecting)
  per host. Beyond that a request waits in a FIFO queue of at most
  ``max_pending``; a request that finds the queue full fails at once with
  :class:`PoolOverloaded` (an ``Overloaded``: nothing was sent).
- A connection that saw EOF or an error is never reused; one whose response
  was not completely received is closed, not pooled.
- Stale keep-alive: a reused connection that dies before any response byte is
  retried once on a new connection when the request may be repeated
  (:func:`retry_safe`: not sent, or an idempotent method with a replayable
  body), as Go's ``net/http`` does; if that new try fails before sending (the
  server is gone), the stale try's reset is raised: its bytes may have been
  seen. Anything else is raised with ``request_sent`` for the caller to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

from qanat.errors import ConfigError
from qanat.http.connection import Connection
from qanat.http.deadlines import DeadlineWheel
from qanat.http.errors import (
    ConnectError,
    PoolOverloaded,
    UpstreamError,
    UpstreamReset,
    UpstreamTimeout,
    retry_safe,
)
from qanat.http.response import UpstreamResponse
from qanat.http.sending import Body, encode_request, send_stream
from qanat.http.stats import HostStats, PoolStats


class _Host:
    """Pool state for one (host, port)."""

    __slots__ = ("connecting", "conns", "idle", "key", "waiters")

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.idle: list[Connection] = []  # LIFO: warmest last
        self.conns: set[Connection] = set()  # every open connection, idle or busy
        self.connecting = 0  # slots reserved by connects in progress
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()

    @property
    def open(self) -> int:
        return len(self.conns) + self.connecting


class HttpPool:
    """A pooled HTTP/1.1 client for upstream calls (plain TCP, one request per connection).

    Defaults: ``max_connections_per_host=256`` (busy + idle + connecting),
    ``max_pending=1024`` waiters per host, ``connect_timeout=1.0`` s,
    ``idle_timeout=60.0`` s before an unused connection is closed,
    ``max_response_header_bytes=65536``; ``body_timeout=None`` (no limit on
    the gap between body bytes), ``read_high_water=262144`` unread body bytes
    before reading pauses, ``retry_stale=True``.
    """

    def __init__(
        self,
        max_connections_per_host: int = 256,
        max_pending: int = 1024,
        connect_timeout: float = 1.0,
        idle_timeout: float = 60.0,
        max_response_header_bytes: int = 65536,
        *,
        body_timeout: float | None = None,
        read_high_water: int = 256 * 1024,
        retry_stale: bool = True,
    ) -> None:
        _positive("max_connections_per_host", max_connections_per_host)
        _positive("max_pending", max_pending, zero_ok=True)
        _positive("connect_timeout", connect_timeout)
        _positive("idle_timeout", idle_timeout)
        _positive("max_response_header_bytes", max_response_header_bytes)
        _positive("read_high_water", read_high_water)
        if body_timeout is not None:
            _positive("body_timeout", body_timeout)
        self._max_conns = max_connections_per_host
        self._max_pending = max_pending
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_head = max_response_header_bytes
        self._body_timeout = body_timeout
        self._high_water = read_high_water
        self._retry_stale = retry_stale
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._wheel: DeadlineWheel | None = None
        self._closed = False
        self._opened = self._requests = self._reused = self._stale_retries = 0

    async def request(
        self,
        method: bytes,
        host: str,
        port: int,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: Body = None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; return once the response head has arrived.

        ``timeout`` bounds everything up to the head: queueing for a slot,
        connecting (also bounded by ``connect_timeout``), sending the body and
        waiting. Errors are :class:`UpstreamError` subclasses with ``request_sent``.
        """
        loop = self._loop or self._bind()
        if self._closed:
            raise ConnectError(f"upstream {host}:{port}: the pool is closed")
        deadline = None if timeout is None else loop.time() + timeout
        key = (host, port)
        h = self._hosts.get(key) or self._add_host(key)
        data, stream, framing, length = encode_request(method, target, headers, body, host, port)
        head_only = method == b"HEAD"
        fresh = False
        stale: UpstreamReset | None = None  # a stale try whose bytes may have been seen
        while True:  # at most twice: a reused connection the server had closed, then a new one
            conn = None if fresh else self._take_idle(h)
            if conn is None:
                try:
                    conn = await self._acquire(h, deadline)
                except UpstreamError as error:
                    if stale is not None:  # what happened to the request: the stale try's end
                        stale.__cause__ = error  # also set: compiled, `from` is dropped
                        raise stale from error
                    raise
            self._requests += 1
            if conn.uses:
                self._reused += 1
            head = conn.begin(head_only, deadline)
            try:
                conn.send(data)
                if stream is not None:
                    await send_stream(conn, stream, framing, length)
                return await head
            except BaseException as error:
                conn.abort()  # state unknown: never reuse; frees the slot
                if head.done() and not head.cancelled():
                    head.exception()  # retrieved: the error raised here is the one that counts
                if fresh or not isinstance(error, UpstreamReset):
                    if stale is not None and isinstance(error, UpstreamError) \
                            and not error.request_sent:
                        stale.__cause__ = error
                        raise stale from error
                    raise
                replayable = stream is None or not error.request_sent
                if not (self._retry_stale and replayable and retry_safe(error, method)):
                    raise
                self._stale_retries += 1
                stale = error if error.request_sent else None
                fresh = True

    def _take_idle(self, h: _Host) -> Connection | None:
        idle = h.idle
        while idle:
            conn = idle.pop()
            conn.pooled = False
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                return conn
            conn.abort()  # closed by the server while idle: never used
        return None

    async def _acquire(self, h: _Host, deadline: float | None) -> Connection:
        """A connection for ``h``: a new one if under the cap, else wait in the FIFO queue."""
        while True:
            if h.open < self._max_conns:
                h.connecting += 1
                return await self._connect(h, deadline)
            if len(h.waiters) >= self._max_pending:
                raise PoolOverloaded(
                    f"upstream {h.key[0]}:{h.key[1]}: {h.open} connections busy and "
                    f"{len(h.waiters)} requests queued (max_pending={self._max_pending})"
                )
            got = await self._wait_turn(h, deadline)
            if got is None:
                return await self._connect(h, deadline)  # handed a free slot
            if not got.closed:
                return got
            got.abort()

    async def _wait_turn(self, h: _Host, deadline: float | None) -> Connection | None:
        loop = self._loop
        assert loop is not None
        turn: asyncio.Future[Connection | None] = loop.create_future()
        h.waiters.append(turn)
        timer = None if deadline is None else loop.call_at(deadline, _expire, turn, h.key)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._give_back(h, turn.result())  # handed over as we were cancelled
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if not turn.done() or turn.cancelled() or turn.exception() is not None:
                with contextlib.suppress(ValueError):  # already popped by a waker
                    h.waiters.remove(turn)

    def _give_back(self, h: _Host, got: Connection | None) -> None:
        if got is None:
            h.connecting -= 1
            self._wake(h)
        else:
            self._on_done(got, not got.closed)

    async def _connect(self, h: _Host, deadline: float | None) -> Connection:
        """Open a connection for a slot already reserved in ``h.connecting``."""
        loop = self._loop
        assert loop is not None
        host, port = h.key
        assert self._wheel is not None
        conn = Connection(
            h.key, loop, self._on_done, self._wheel, max_head=self._max_head,
            high_water=self._high_water, body_timeout=self._body_timeout,
        )
        limit = self._connect_timeout
        by_deadline = deadline is not None and deadline - loop.time() < limit
        if deadline is not None:
            limit = min(limit, max(0.0, deadline - loop.time()))
        try:
            await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), limit)
        except BaseException as exc:
            h.connecting -= 1
            self._wake(h)
            if conn.transport is not None:
                conn.transport.close()
            if isinstance(exc, asyncio.TimeoutError) and by_deadline:
                raise UpstreamTimeout(
                    f"upstream {host}:{port}: the timeout elapsed while connecting",
                    request_sent=False,
                ) from None
            if isinstance(exc, asyncio.TimeoutError):
                raise ConnectError(
                    f"upstream {host}:{port}: connect timed out after {self._connect_timeout}s"
                ) from None
            if isinstance(exc, OSError):
                raise ConnectError(f"upstream {host}:{port}: connect failed: {exc}") from exc
            raise
        h.connecting -= 1
        h.conns.add(conn)
        self._opened += 1
        return conn

    def _on_done(self, conn: Connection, reusable: bool) -> None:
        """Called by a connection when its response ended (reusable) or it closed."""
        h = self._hosts.get(conn.key)
        if h is None:  # pragma: no cover - a host is only dropped with no connections
            return
        if reusable:
            if self._closed:
                conn.abort()  # calls back with reusable=False
                return
            while h.waiters:
                turn = h.waiters.popleft()
                if not turn.done():
                    turn.set_result(conn)
                    return
            loop = self._loop
            assert loop is not None
            conn.idle_since = loop.time()
            conn.pooled = True
            h.idle.append(conn)
            if self._sweeper is None:
                self._sweeper = loop.call_later(self._sweep_every(), self._sweep)
            return
        if conn.pooled:
            conn.pooled = False
            h.idle.remove(conn)
        h.conns.discard(conn)
        self._wake(h)

    def _wake(self, h: _Host) -> None:
        """Give freed slots to the queue, first come first served."""
        while h.waiters and h.open < self._max_conns:
            turn = h.waiters.popleft()
            if not turn.done():
                h.connecting += 1
                turn.set_result(None)

    def _sweep_every(self) -> float:
        return max(0.005, self._idle_timeout / 4)

    def _sweep(self) -> None:
        """Close connections idle longer than ``idle_timeout`` (the bottom of each stack)."""
        self._sweeper = None
        loop = self._loop
        assert loop is not None
        expiry = loop.time() - self._idle_timeout
        remaining = False
        for key, h in list(self._hosts.items()):
            while h.idle and h.idle[0].idle_since <= expiry:
                conn = h.idle.pop(0)
                conn.pooled = False
                conn.abort()
            remaining = remaining or bool(h.idle)
            if not h.conns and not h.connecting and not h.waiters:
                del self._hosts[key]
        if remaining and not self._closed:
            self._sweeper = loop.call_later(self._sweep_every(), self._sweep)

    def stats(self) -> PoolStats:
        """A snapshot of every host's connections and the pool's counters."""
        hosts = tuple(
            HostStats(
                host=key[0], port=key[1], open=h.open, idle=len(h.idle),
                in_use=len(h.conns) - len(h.idle), connecting=h.connecting,
                pending=sum(1 for t in h.waiters if not t.done()),
            )
            for key, h in self._hosts.items()
        )
        return PoolStats(
            hosts=hosts,
            open=sum(s.open for s in hosts),
            idle=sum(s.idle for s in hosts),
            in_use=sum(s.in_use for s in hosts),
            pending=sum(s.pending for s in hosts),
            connections_opened=self._opened,
            requests=self._requests,
            reused=self._reused,
            stale_retries=self._stale_retries,
        )

    async def aclose(self) -> None:
        """Close every connection (in-flight calls fail with UpstreamReset); refuse new calls."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for h in list(self._hosts.values()):
            while h.waiters:
                turn = h.waiters.popleft()
                if not turn.done():
                    turn.set_exception(ConnectError(f"upstream {h.key}: the pool was closed"))
            for conn in list(h.conns):
                conn.abort()
        if self._wheel is not None:
            self._wheel.close()

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = loop = asyncio.get_running_loop()
        self._wheel = DeadlineWheel(loop)
        return loop

    def _add_host(self, key: tuple[str, int]) -> _Host:
        h = self._hosts[key] = _Host(key)
        return h


def _expire(turn: asyncio.Future[Connection | None], key: tuple[str, int]) -> None:
    if not turn.done():
        turn.set_exception(
            UpstreamTimeout(
                f"upstream {key[0]}:{key[1]}: the timeout elapsed waiting for a free connection",
                request_sent=False,
            )
        )


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(
            f"must be {'>= 0' if zero_ok else '> 0'}, got {value!r}", source=f"HttpPool({name}=...)"
        )


__all__ = ["HttpPool"]
