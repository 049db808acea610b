"""The pool against real local servers: reuse, LIFO, cap and queue, stale and idle connections."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from upstream_servers import (
    Exchange,
    Received,
    Upstream,
    response,
    silent_port,
    until_client_closes,
)

from qanat.errors import ConfigError, Overloaded, Unavailable
from qanat.http import (
    ConnectError,
    HttpPool,
    PoolOverloaded,
    UpstreamReset,
    UpstreamTimeout,
    retry_safe,
)
from qanat.testing import eventually

H = [(b"host", b"test")]


async def get(pool: HttpPool, up: Upstream, target: bytes = b"/") -> bytes:
    resp = await pool.request(b"GET", "127.0.0.1", up.port, target, H, timeout=5.0)
    return await resp.read()


class Gate:
    """A handler that holds the answer to chosen targets until released."""

    def __init__(self, *held: bytes) -> None:
        self.held = set(held)
        self.open: dict[bytes, asyncio.Event] = {}

    def release(self, target: bytes) -> None:
        self.open.setdefault(target, asyncio.Event()).set()

    async def __call__(self, req: Received, ex: Exchange) -> None:
        if req.target in self.held or b"*" in self.held:
            await self.open.setdefault(req.target, asyncio.Event()).wait()
        await ex.send(response(200, req.target))


async def test_keep_alive_reuses_one_connection() -> None:
    """Sequential requests to one host ride a single kept-alive connection."""
    async with Upstream() as up, HttpPool() as pool:
        bodies = [await get(pool, up, b"/%d" % i) for i in range(5)]
        stats = pool.stats()
    assert bodies == [b"/%d" % i for i in range(5)]
    assert up.accepted == 1
    assert (stats.connections_opened, stats.requests, stats.reused) == (1, 5, 4)
    assert (stats.open, stats.idle, stats.in_use) == (1, 1, 0)


async def test_idle_connections_are_reused_last_in_first_out() -> None:
    """The most recently released connection serves the next request (warm first)."""
    gate = Gate(b"/slow")
    async with Upstream(gate) as up, HttpPool() as pool:
        slow = asyncio.create_task(get(pool, up, b"/slow"))  # connection 1, held
        await up.wait_until(lambda: len(up.received) == 1)
        assert await get(pool, up, b"/a") == b"/a"  # connection 2, idle first
        gate.release(b"/slow")
        await slow  # connection 1 released last: on top of the stack
        await get(pool, up, b"/b")
        await get(pool, up, b"/c")
    assert [r.connection for r in up.received] == [1, 2, 1, 1]


async def test_cap_queues_waiters_fifo_and_sheds_overflow() -> None:
    """Beyond the cap requests queue in order; a full queue fails at once with Overloaded."""
    gate = Gate(b"*")
    async with Upstream(gate) as up:
        pool = HttpPool(max_connections_per_host=2, max_pending=2)
        tasks = [asyncio.create_task(get(pool, up, b"/%d" % i)) for i in range(4)]
        await eventually(lambda: pool.stats().pending == 2 and len(up.received) == 2)
        stats = pool.stats()
        assert (stats.open, stats.in_use, stats.pending) == (2, 2, 2)
        with pytest.raises(PoolOverloaded) as caught:
            await get(pool, up, b"/overflow")
        assert isinstance(caught.value, Overloaded)
        assert caught.value.request_sent is False
        for i in range(4):
            gate.release(b"/%d" % i)
        assert await asyncio.gather(*tasks) == [b"/%d" % i for i in range(4)]
        await pool.aclose()
    assert up.accepted == 2
    assert [r.target for r in up.received][2:] == [b"/2", b"/3"]  # first come, first served


async def test_queue_wait_counts_against_the_timeout() -> None:
    """A request still queued for a slot when its timeout elapses fails unsent."""
    gate = Gate(b"/held")
    async with Upstream(gate) as up, HttpPool(max_connections_per_host=1) as pool:
        held = asyncio.create_task(get(pool, up, b"/held"))
        await up.wait_until(lambda: len(up.received) == 1)
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request(b"POST", "127.0.0.1", up.port, b"/late", H, body=b"x", timeout=0.05)
        assert caught.value.request_sent is False
        assert pool.stats().pending == 0
        gate.release(b"/held")
        assert await held == b"/held"
    assert [r.target for r in up.received] == [b"/held"]


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """Cancelling a queued request removes it, and the freed slot goes to the next one."""
    gate = Gate(b"/held")
    async with Upstream(gate) as up, HttpPool(max_connections_per_host=1) as pool:
        held = asyncio.create_task(get(pool, up, b"/held"))
        await up.wait_until(lambda: len(up.received) == 1)
        doomed = asyncio.create_task(get(pool, up, b"/doomed"))
        later = asyncio.create_task(get(pool, up, b"/later"))
        await eventually(lambda: pool.stats().pending == 2)
        doomed.cancel()
        await eventually(lambda: pool.stats().pending == 1)
        gate.release(b"/held")
        assert (await held, await later) == (b"/held", b"/later")
    assert [r.target for r in up.received] == [b"/held", b"/later"]


async def test_cancelling_an_in_flight_request_closes_its_connection() -> None:
    """A request cancelled while awaiting the head closes the connection and frees the slot."""
    async with Upstream(until_client_closes) as up, HttpPool() as pool:
        task = asyncio.create_task(get(pool, up, b"/never"))
        await up.wait_until(lambda: len(up.received) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().open == 0
        await up.wait_until(lambda: up.closed == 1)


async def test_connection_closed_by_server_while_idle_is_never_used() -> None:
    """The pool notices an idle connection the server closed and opens a new one."""

    async def answer_then_close(req: Received, ex: Exchange) -> None:
        await ex.send(response(200, req.target))  # keep-alive response, then FIN
        ex.close()

    async with Upstream(answer_then_close) as up, HttpPool() as pool:
        assert await get(pool, up, b"/1") == b"/1"
        await eventually(lambda: pool.stats().open == 0)
        assert await get(pool, up, b"/2") == b"/2"
        stats = pool.stats()
    assert up.accepted == 2
    assert stats.stale_retries == 0  # detected before use, not by a failed request


class DropSecond:
    """Answers the first request on each connection; reads the second and closes silently."""

    async def __call__(self, req: Received, ex: Exchange) -> None:
        served = sum(1 for r in self.up.received if r.connection == req.connection)
        if served >= 2:
            ex.close()  # the keep-alive race: the server saw it and hung up
        else:
            await ex.send(response(200, req.target))

    up: Upstream


async def _drop_second_server() -> Upstream:
    handler = DropSecond()
    up = Upstream(handler)
    handler.up = up
    return up


async def test_stale_keep_alive_retries_idempotent_request_once() -> None:
    """A GET that dies on a reused connection before any response byte is retried on a new one."""
    async with await _drop_second_server() as up, HttpPool() as pool:
        assert await get(pool, up, b"/1") == b"/1"
        assert await get(pool, up, b"/2") == b"/2"
        stats = pool.stats()
    assert stats.stale_retries == 1
    assert [(r.target, r.connection) for r in up.received] == [(b"/1", 1), (b"/2", 1), (b"/2", 2)]


async def test_stale_keep_alive_never_retries_a_post() -> None:
    """A POST that dies the same way raises UpstreamReset (sent, reused) and is not repeated."""
    async with await _drop_second_server() as up, HttpPool() as pool:
        for i in range(2):
            try:
                resp = await pool.request(b"POST", "127.0.0.1", up.port, b"/%d" % i, H, b"x")
                await resp.read()
            except UpstreamReset as error:
                caught = error
    assert (caught.request_sent, caught.reused, caught.response_started) == (True, True, False)
    assert not retry_safe(caught, b"POST")
    assert retry_safe(caught, b"GET")
    assert [r.target for r in up.received] == [b"/0", b"/1"]


async def test_stale_retry_that_fails_to_connect_raises_the_stale_reset() -> None:
    """The stale try's bytes reached the server: when the new connection is refused, the
    caller gets that reset (sent, so retried only if idempotent and within a retry budget),
    with the refused connect as its cause, not a refusal that says no upstream saw it."""
    up = Upstream()

    async def hang_up_and_stop_listening(req: Received, ex: Exchange) -> None:
        if req.target == b"/2":
            await up.stop_listening()
            ex.close()
        else:
            await ex.send(response(200, req.target))

    up.handler = hang_up_and_stop_listening
    async with up, HttpPool() as pool:
        assert await get(pool, up, b"/1") == b"/1"
        with pytest.raises(UpstreamReset) as caught:
            await get(pool, up, b"/2")
        stats = pool.stats()
    assert stats.stale_retries == 1
    assert caught.value.request_sent and isinstance(caught.value.__cause__, ConnectError)
    assert retry_safe(caught.value, b"GET") and not retry_safe(caught.value, b"POST")
    assert [r.target for r in up.received] == [b"/1", b"/2"]


async def test_stale_retry_can_be_turned_off() -> None:
    """With retry_stale=False the stale GET's error reaches the caller, marked retry-safe."""
    async with await _drop_second_server() as up, HttpPool(retry_stale=False) as pool:
        await get(pool, up, b"/1")
        with pytest.raises(UpstreamReset) as caught:
            await get(pool, up, b"/2")
    assert retry_safe(caught.value, b"GET")
    assert up.accepted == 1


async def test_idle_connections_close_after_idle_timeout() -> None:
    """A connection unused for idle_timeout is closed by the pool (the server sees the close)."""
    async with Upstream() as up, HttpPool(idle_timeout=0.05) as pool:
        await get(pool, up)
        await up.wait_until(lambda: up.closed == 1)
        assert pool.stats().open == 0


async def test_connect_refused_is_a_connect_error() -> None:
    """Nothing listening: ConnectError, an Unavailable with request_sent False."""
    async with silent_port() as port, HttpPool() as pool:
        with pytest.raises(ConnectError) as caught:
            await pool.request(b"POST", "127.0.0.1", port, b"/", H, b"x", timeout=5)
    assert isinstance(caught.value, Unavailable)
    assert caught.value.request_sent is False
    assert pool.stats().open == 0


async def test_connect_timeout_is_a_connect_error() -> None:
    """A listener whose accept queue is full never completes the handshake: ConnectError."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue so further SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        async with HttpPool(connect_timeout=0.1) as pool:
            with pytest.raises(ConnectError, match="timed out"):
                await pool.request(b"GET", "127.0.0.1", port, b"/", H, timeout=5)
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_closed_pool_refuses_and_fails_in_flight() -> None:
    """aclose fails in-flight requests with UpstreamReset and refuses new ones."""
    async with Upstream(Gate(b"/held")) as up:
        pool = HttpPool()
        task = asyncio.create_task(get(pool, up, b"/held"))
        await up.wait_until(lambda: len(up.received) == 1)
        await pool.aclose()
        with pytest.raises(UpstreamReset):
            await task
        with pytest.raises(ConnectError, match="closed"):
            await get(pool, up)


def test_stats_are_frozen() -> None:
    """PoolStats is an immutable snapshot."""
    stats = HttpPool().stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.open = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs", [{"max_connections_per_host": 0}, {"connect_timeout": -1}, {"body_timeout": 0}]
)
def test_bad_settings_are_config_errors(kwargs: dict[str, float]) -> None:
    """Invalid settings name the parameter in a ConfigError."""
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        HttpPool(**kwargs)  # type: ignore[arg-type]
