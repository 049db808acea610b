"""HTTP/1.1 message handling against real local servers: framing, bodies, limits, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from upstream_servers import Exchange, Handler, Received, Upstream, response

from qanat.http import (
    BodyTooLarge,
    HttpPool,
    InvalidRequest,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamResponse,
    UpstreamTimeout,
)
from qanat.testing import eventually

H = [(b"host", b"test")]


def raw(*parts: bytes, close: bool = False) -> Handler:
    """A handler that answers every request with ``parts`` written one by one."""

    async def handler(req: Received, ex: Exchange) -> None:
        for part in parts:
            await ex.send(part)
        if close:
            ex.close()

    return handler


async def call(
    pool: HttpPool, up: Upstream, method: bytes = b"GET", target: bytes = b"/", **kw: object
) -> UpstreamResponse:
    return await pool.request(method, "127.0.0.1", up.port, target, H, timeout=5.0, **kw)  # type: ignore[arg-type]


async def test_chunked_response_is_decoded_and_connection_reused() -> None:
    """A chunked body sent in pieces reads back whole; the connection stays pooled."""
    handler = raw(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
        b"1;ext=1\r\n \r\n6\r\nworld!\r\n",
        b"0\r\nx-trailer: t\r\n\r\n",
    )
    async with Upstream(handler) as up, HttpPool() as pool:
        first = await call(pool, up)
        assert await first.read() == b"hello world!"
        chunks = [c async for c in (await call(pool, up)).iter_chunks()]
        stats = pool.stats()
    assert b"".join(chunks) == b"hello world!"
    assert up.accepted == 1 and stats.reused == 1


async def test_head_fields_are_exposed_as_received() -> None:
    """Status, reason, header names (case kept, order kept) and version come from the wire."""
    handler = raw(b"HTTP/1.1 201 Made It\r\nX-One: 1\r\nset-cookie: a\r\nSet-Cookie: b\r\n"
                  b"content-length: 0\r\n\r\n")
    async with Upstream(handler) as up, HttpPool() as pool:
        resp = await call(pool, up)
    assert (resp.status, resp.reason, resp.http_version) == (201, b"Made It", "1.1")
    assert resp.headers[:3] == [(b"X-One", b"1"), (b"set-cookie", b"a"), (b"Set-Cookie", b"b")]
    assert resp.header(b"x-one") == b"1" and resp.header(b"missing") is None


async def test_streamed_request_body_is_sent_chunked() -> None:
    """An async-iterable body without content-length goes out with chunked encoding."""

    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"", b"defg", b"h" * 100_000):
            yield piece

    async with Upstream() as up, HttpPool() as pool:
        resp = await call(pool, up, b"POST", body=parts())
        await resp.read()
        await call(pool, up)  # the connection is still in step
    req = up.received[0]
    assert req.header(b"transfer-encoding") == b"chunked"
    assert req.body == b"abcdefg" + b"h" * 100_000
    assert up.accepted == 1


async def test_streamed_body_with_content_length_is_sent_raw() -> None:
    """A stream with a caller-given content-length is sent as is, without chunking."""

    async def parts() -> AsyncIterator[bytes]:
        yield b"12345"
        yield b"678"

    async with Upstream() as up, HttpPool() as pool:
        headers = [*H, (b"content-length", b"8")]
        resp = await pool.request(b"PUT", "127.0.0.1", up.port, b"/", headers, parts())
        await resp.read()
    assert up.received[0].body == b"12345678"
    assert up.received[0].header(b"transfer-encoding") is None


async def test_stream_shorter_than_content_length_is_an_invalid_request() -> None:
    """A stream that ends before its content-length raises and the connection is dropped."""

    async def parts() -> AsyncIterator[bytes]:
        yield b"123"

    async with Upstream() as up, HttpPool() as pool:
        headers = [*H, (b"content-length", b"8")]
        with pytest.raises(InvalidRequest) as caught:
            await pool.request(b"PUT", "127.0.0.1", up.port, b"/", headers, parts())
        assert caught.value.request_sent is True
        assert pool.stats().open == 0


async def test_bytes_body_gets_content_length_and_host_is_added_when_missing() -> None:
    """A bytes body is framed with content-length; a missing host is filled in."""
    async with Upstream() as up, HttpPool() as pool:
        resp = await pool.request(b"POST", "127.0.0.1", up.port, b"/", [], b"payload")
        await resp.read()
    req = up.received[0]
    assert req.header(b"content-length") == b"7" and req.body == b"payload"
    assert req.header(b"host") == b"127.0.0.1:%d" % up.port


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses_complete_without_body(status: int) -> None:
    """204 and 304 have no body (even with a content-length); the connection is reused."""
    handler = raw(b"HTTP/1.1 %d X\r\ncontent-length: 50\r\n\r\n" % status)
    async with Upstream(handler) as up, HttpPool() as pool:
        assert await (await call(pool, up)).read() == b""
        assert await (await call(pool, up)).read() == b""
    assert up.accepted == 1


async def test_head_response_has_no_body_and_connection_stays_in_step() -> None:
    """HEAD's content-length describes a body never sent; the next GET still parses right."""

    async def handler(req: Received, ex: Exchange) -> None:
        if req.method == b"HEAD":
            await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        else:
            await ex.send(response(200, b"after head"))

    async with Upstream(handler) as up, HttpPool() as pool:
        head = await call(pool, up, b"HEAD")
        assert head.header(b"content-length") == b"1000"
        assert await head.read() == b""
        assert await (await call(pool, up)).read() == b"after head"
        assert await (await call(pool, up, b"HEAD")).read() == b""
    assert up.accepted == 1


async def test_interim_responses_are_skipped() -> None:
    """1xx responses (100 Continue, 103 Early Hints) are skipped; the final one is returned."""
    handler = raw(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n",
                  response(200, b"final"))
    async with Upstream(handler) as up, HttpPool() as pool:
        resp = await call(pool, up)
        assert (resp.status, resp.headers[0], await resp.read()) == (
            200, (b"content-length", b"5"), b"final")


@pytest.mark.parametrize(
    "answer",
    [
        response(200, b"bye", (b"Connection", b"close")),
        b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nbye",
    ],
)
async def test_server_asking_to_close_is_not_reused(answer: bytes) -> None:
    """Connection: close (or HTTP/1.0 without keep-alive) means a new connection next time."""
    async with Upstream(raw(answer)) as up, HttpPool() as pool:
        assert await (await call(pool, up)).read() == b"bye"
        assert await (await call(pool, up)).read() == b"bye"
        stats = pool.stats()
    assert up.accepted == 2 and stats.reused == 0


async def test_body_delimited_by_close_is_read_to_eof() -> None:
    """A response with neither content-length nor chunked ends when the server closes."""
    handler = raw(b"HTTP/1.1 200 OK\r\n\r\n", b"part one, ", b"part two", close=True)
    async with Upstream(handler) as up, HttpPool() as pool:
        assert await (await call(pool, up)).read() == b"part one, part two"
        assert pool.stats().open == 0


async def test_head_timeout() -> None:
    """No head before the timeout: UpstreamTimeout (request_sent) and the connection closes."""

    async def mute(req: Received, ex: Exchange) -> None:
        await ex.reader.read()
        ex.close()

    async with Upstream(mute) as up, HttpPool() as pool:
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request(b"GET", "127.0.0.1", up.port, b"/", H, timeout=0.05)
        assert (caught.value.request_sent, caught.value.response_started) == (True, False)
        await up.wait_until(lambda: up.closed == 1)
        assert pool.stats().open == 0


async def test_body_idle_timeout() -> None:
    """With body_timeout, a body that stalls mid-way fails with UpstreamTimeout."""

    async def stall(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await ex.reader.read()
        ex.close()

    async with Upstream(stall) as up, HttpPool(body_timeout=0.05) as pool:
        resp = await call(pool, up)
        with pytest.raises(UpstreamTimeout) as caught:
            await resp.read()
        assert caught.value.response_started is True
        await up.wait_until(lambda: up.closed == 1)


async def test_oversized_head_is_a_protocol_error() -> None:
    """A head beyond max_response_header_bytes fails, whether sent whole or without an end."""
    big = b"HTTP/1.1 200 OK\r\n" + b"x-pad: %s\r\n" % (b"p" * 3000) + b"content-length: 0\r\n\r\n"
    endless = b"HTTP/1.1 200 OK\r\nx-pad: " + b"p" * 200_000
    for answer in (big, endless):
        async with Upstream(raw(answer)) as up, HttpPool(
            max_response_header_bytes=2048
        ) as pool:
            with pytest.raises(UpstreamProtocolError, match="2048"):
                await call(pool, up)


async def test_malformed_response_is_a_protocol_error() -> None:
    """Bytes that are not an HTTP/1.1 response raise UpstreamProtocolError."""
    async with Upstream(raw(b"SSH-2.0-OpenSSH\r\n\r\n")) as up, HttpPool() as pool:
        with pytest.raises(UpstreamProtocolError):
            await call(pool, up)
        assert pool.stats().open == 0


async def test_reset_in_the_middle_of_the_body() -> None:
    """A connection that dies mid-body fails read() with UpstreamReset(response_started)."""

    async def cut(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly some")
        ex.close()

    async with Upstream(cut) as up, HttpPool() as pool:
        resp = await call(pool, up)
        with pytest.raises(UpstreamReset) as caught:
            await resp.read()
    assert (caught.value.request_sent, caught.value.response_started) == (True, True)


async def test_read_max_bytes_drops_the_response() -> None:
    """read(max_bytes) over the limit raises BodyTooLarge; the connection is not reused."""
    async with Upstream(raw(response(200, b"x" * 5000))) as up, HttpPool() as pool:
        with pytest.raises(BodyTooLarge):
            await (await call(pool, up)).read(max_bytes=100)
        assert await (await call(pool, up)).read(max_bytes=5000) == b"x" * 5000


async def test_aclose_of_an_unread_body_closes_the_connection() -> None:
    """Releasing a response whose body has not fully arrived closes its connection."""

    async def slow_body(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
        await ex.reader.read()
        ex.close()

    async with Upstream(slow_body) as up, HttpPool() as pool:
        async with await call(pool, up) as resp:
            assert resp.status == 200
        await up.wait_until(lambda: up.closed == 1)
        with pytest.raises(RuntimeError, match="closed"):
            await resp.read()


async def test_unsolicited_bytes_drop_the_idle_connection() -> None:
    """Bytes beyond the response (out of step) close the connection; the next call is fine."""
    async with Upstream(raw(response(200, b"ok") + b"garbage")) as up, HttpPool() as pool:
        assert await (await call(pool, up)).read() == b"ok"
        await eventually(lambda: pool.stats().open == 0)
        assert await (await call(pool, up)).read() == b"ok"
    assert up.accepted == 2


async def test_invalid_request_sends_nothing() -> None:
    """A header with CR/LF is refused before any connection is made."""
    async with Upstream() as up, HttpPool() as pool:
        with pytest.raises(InvalidRequest, match="x-evil"):
            await pool.request(b"GET", "127.0.0.1", up.port, b"/", [(b"x-evil", b"a\r\nb: c")])
        assert pool.stats().connections_opened == 0


async def test_cancelled_read_frees_the_connection() -> None:
    """A read() cancelled mid-body (e.g. by wait_for) closes the connection, freeing its slot."""

    async def slow_body(req: Received, ex: Exchange) -> None:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
        await ex.reader.read()
        ex.close()

    async with Upstream(slow_body) as up, HttpPool() as pool:
        resp = await call(pool, up)
        await eventually(lambda: resp.buffered == 5)  # "first" arrived
        task = asyncio.ensure_future(resp.read())
        await eventually(lambda: resp.buffered == 0)  # read() took "first" and waits for more
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().open == 0
        await up.wait_until(lambda: up.closed == 1)
