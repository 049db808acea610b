"""The writer's fast path: eager ``take_ready`` and one write for a response at hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.gateway.writer_support import connection, recorder, written
from tests.unit.gateway.writer_support import request as _req

from qanat.gateway.filters import Reply
from qanat.gateway.writer import take_ready, write_reply, write_whole


class Gate:
    """A stream whose chunks are either ready at once or wait for ``open()``."""

    def __init__(self, plan: list[tuple[bytes, bool]]) -> None:
        self.plan = plan  # (chunk, waits first)
        self.waiter: asyncio.Future[None] | None = None
        self.waiting = asyncio.Event()  # set while the stream waits for open()
        self.closed = False

    def open(self) -> None:
        assert self.waiter is not None
        self.waiting.clear()
        self.waiter.set_result(None)

    async def gen(self) -> AsyncIterator[bytes]:
        try:
            for chunk, waits in self.plan:
                if waits:
                    self.waiter = asyncio.get_running_loop().create_future()
                    self.waiting.set()
                    await self.waiter
                    self.waiter = None
                yield chunk
        finally:
            self.closed = True


async def test_ready_chunks_are_taken_without_the_event_loop() -> None:
    """Chunks a stream yields without waiting are all taken, and its end is seen."""
    stream = Gate([(b"a", False), (b"bc", False)]).gen()
    chunks, pending, ended = take_ready(stream, 1 << 16)
    assert chunks == [b"a", b"bc"] and pending is None and ended


async def test_a_suspended_step_is_carried_on_by_pending() -> None:
    """When the stream must wait, the chunks before are taken and ``pending`` yields the next."""
    gate = Gate([(b"a", False), (b"b", True), (b"c", False)])
    stream = gate.gen()
    chunks, pending, ended = take_ready(stream, 1 << 16)
    assert chunks == [b"a"] and pending is not None and not ended
    asyncio.get_running_loop().call_soon(gate.open)
    assert await pending == b"b"
    assert [c async for c in stream] == [b"c"]


async def test_the_end_after_a_wait_raises_stop_async_iteration() -> None:
    """A stream that ends after waiting ends ``pending`` with StopAsyncIteration."""
    gate = Gate([(b"a", False)])

    async def tail() -> AsyncIterator[bytes]:
        async for c in gate.gen():
            yield c
        await asyncio.sleep(0)  # suspends once before the end

    chunks, pending, ended = take_ready(tail(), 1 << 16)
    assert chunks == [b"a"] and pending is not None and not ended
    with pytest.raises(StopAsyncIteration):
        await pending


async def test_limit_bounds_what_is_gathered() -> None:
    """No more than about ``limit`` bytes are gathered; the rest stays in the stream."""
    stream = Gate([(b"x" * 10, False)] * 5).gen()
    chunks, pending, ended = take_ready(stream, 25)
    assert len(chunks) == 3 and pending is None and not ended
    assert len([c async for c in stream]) == 2


async def test_errors_of_the_stream_propagate() -> None:
    """An error raised before the first suspension surfaces from take_ready itself."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"a"
        raise ConnectionResetError("upstream gone")

    with pytest.raises(ConnectionResetError):
        take_ready(broken(), 1 << 16)


async def test_cancelling_the_awaiter_cancels_the_suspended_step() -> None:
    """Cancelling the task awaiting ``pending`` throws CancelledError into the stream."""
    gate = Gate([(b"a", True)])
    stream = gate.gen()
    _, pending, _ = take_ready(stream, 1 << 16)
    assert pending is not None

    started = asyncio.Event()

    async def wait() -> bytes:
        started.set()
        return await pending  # suspends in the same step that set ``started``

    task = asyncio.create_task(wait())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.closed  # the generator's finally ran: the step saw the cancellation


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=0, max_size=40), st.booleans()), max_size=12),
       st.integers(min_value=1, max_value=200))
def test_take_ready_then_the_rest_gives_the_whole_stream(
    plan: list[tuple[bytes, bool]], limit: int
) -> None:
    """Whatever is ready or waits, taken + pending + the rest is the stream, in order."""
    assert asyncio.run(_drive(plan, limit)) == [c for c, _ in plan]


async def _drive(plan: list[tuple[bytes, bool]], limit: int) -> list[bytes]:
    """take_ready, then pending, then the rest, while a helper opens every gate."""
    gate = Gate(plan)
    stream = gate.gen()

    async def opener() -> None:
        while True:
            await gate.waiting.wait()
            gate.open()

    helper = asyncio.create_task(opener())
    try:
        chunks, pending, ended = take_ready(stream, limit)
        out = list(chunks)
        if pending is not None:
            try:
                out.append(await pending)
            except StopAsyncIteration:
                return out
        elif ended:
            return out
        out += [c async for c in stream]
        return out
    finally:
        helper.cancel()


def _parse(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    got: dict[str, Any] = {"headers": {}, "body": b""}

    class P:
        def on_header(self, n: bytes, v: bytes) -> None:
            got["headers"][n.lower()] = v

        def on_body(self, b: bytes) -> None:
            got["body"] += b

        def on_message_complete(self) -> None:
            got["done"] = True

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(raw)
    assert got.get("done"), raw
    return parser.get_status_code(), got["headers"], got["body"]


@pytest.mark.parametrize("length", [True, False])
async def test_a_stream_at_hand_goes_out_in_one_write(length: bool) -> None:
    """A streamed response whose body is already there is one write: head, body, end."""
    conn = connection()
    released: list[bool] = []

    async def release() -> None:
        released.append(True)

    headers = [(b"content-length", b"5")] if length else []
    reply = Reply(200, headers, stream=Gate([(b"he", False), (b"llo", False)]).gen(),
                  release=release)
    keep = await write_reply(conn, _req(), reply, keep=True)
    assert keep and released == [True] and len(written(conn)) == 1
    status, hdrs, body = _parse(written(conn)[0])
    assert (status, body) == (200, b"hello")
    assert (b"transfer-encoding" in hdrs) is not length


async def test_a_stream_that_waits_sends_the_head_first() -> None:
    """A stream that has nothing yet does not hold back the head; the rest follows."""
    conn = connection()
    gate = Gate([(b"late", True)])
    reply = Reply(200, [], stream=gate.gen())
    task = asyncio.create_task(write_reply(conn, _req(), reply, keep=True))
    await asyncio.wait_for(gate.waiting.wait(), 5)
    assert len(written(conn)) == 1 and written(conn)[0].endswith(b"\r\n\r\n")
    gate.open()
    assert await task
    status, _, body = _parse(b"".join(written(conn)))
    assert (status, body) == (200, b"late")


async def test_a_stream_failing_at_once_aborts_without_a_head() -> None:
    """A stream that fails before any byte is sent aborts the connection: nothing is written."""
    conn = connection()

    async def broken() -> AsyncIterator[bytes]:
        raise ConnectionResetError("gone")
        yield b""  # pragma: no cover - makes this an async generator

    keep = await write_reply(conn, _req(), Reply(200, [], stream=broken()), keep=True)
    assert not keep and recorder(conn).aborted and written(conn) == []


async def test_http10_stream_is_delimited_by_close() -> None:
    """An HTTP/1.0 client gets an unframed stream followed by the close, still one write."""
    conn = connection()
    reply = Reply(200, [], stream=Gate([(b"abc", False)]).gen())
    keep = await write_reply(conn, _req("1.0"), reply, keep=True)
    assert not keep and len(written(conn)) == 1
    assert written(conn)[0].endswith(b"connection: close\r\n\r\nabc")


names = st.sampled_from([b"content-type", b"x-a", b"content-length", b"etag", b"via"])
values = st.binary(min_size=1, max_size=12).map(
    lambda v: bytes(c for c in v if 0x21 <= c <= 0x7E) or b"v")


@given(st.lists(st.tuples(names, values), max_size=6), st.binary(max_size=20))
async def test_a_body_reply_head_is_its_fields_in_order_with_the_body_length(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Every field but content-length goes out once, in order, then the body's own length."""
    conn = connection()
    await write_reply(conn, _req(), Reply(200, headers, body), keep=True)
    [raw] = written(conn)
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")[1:]
    kept = [n + b": " + v for n, v in headers if n != b"content-length"]
    assert lines == [*kept, b"content-length: %d" % len(body)] and rest == body


@settings(max_examples=60, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 304, 404, 503]),
    body=st.one_of(st.none(), st.binary(max_size=64)),
    keep=st.booleans(),
    method=st.sampled_from([b"GET", b"HEAD"]),
    version=st.sampled_from(["1.1", "1.0"]),
    extra=st.lists(st.tuples(st.sampled_from([b"x-a", b"content-length", b"etag"]),
                             st.binary(min_size=1, max_size=8).filter(lambda v: b"\r" not in v
                                                                     and b"\n" not in v)),
                   max_size=3),
)
def test_write_whole_writes_what_write_reply_writes(
    status: int, body: bytes | None, keep: bool, method: bytes, version: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """The coroutine-free path gives the same bytes, the same keep-alive and one ``done``."""
    async def run(slow: bool) -> tuple[list[bytes], Any, list[int]]:
        conn, calls = connection(), []
        kept: bool | None
        reply = Reply(status, list(extra), body, done=lambda: calls.append(1))
        if slow:
            kept = await write_reply(conn, req, reply, keep=keep)
        else:
            kept = write_whole(conn, req, reply, keep=keep)
        return written(conn), kept, calls

    req = _req(version, method)
    assert asyncio.run(run(False)) == asyncio.run(run(True))


async def test_write_whole_leaves_streams_and_releases_to_write_reply() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    async def release() -> None:
        return None

    conn = connection()
    assert write_whole(conn, _req(), Reply(200, [], stream=chunks()), keep=True) is None
    assert write_whole(conn, _req(), Reply(200, [], b"x", release=release), keep=True) is None
    assert written(conn) == []
