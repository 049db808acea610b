"""Writing a ``Reply`` to the client: framing, keep-alive, streaming with back-pressure.

Framing follows RFC 9112 §6: a complete body gets Content-Length; a stream
keeps the upstream's Content-Length when it had one, else is sent chunked to
an HTTP/1.1 client or delimited by close to an HTTP/1.0 one. HEAD, 1xx, 204
and 304 answers carry no body. If a streamed body fails half way the
connection is aborted, so the client sees a truncated message, never a
complete-looking wrong one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import TYPE_CHECKING, Any

from qanat.gateway.filters import Reply
from qanat.gateway.problem import reason_phrase

if TYPE_CHECKING:
    from qanat.gateway.connection import HttpProtocol
    from qanat.gateway.request import Request

_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_NO_BODY = frozenset((204, 304))
READY_BYTES = 64 * 1024  # at most this much body is gathered to go out with the head
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_COLON_SPACE_JOIN = b": ".join


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, cached per (status, reason)."""
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))
        if len(_STATUS_LINES) < 512:  # reasons come from upstreams: bound the cache
            _STATUS_LINES[key] = line
    return line


def write_whole(conn: HttpProtocol, req: Request | None, reply: Reply, *, keep: bool
                ) -> bool | None:
    """``write_reply`` for a reply with no stream and no release, without a coroutine.

    Most answers are such (a complete upstream body, a problem the gateway
    made): the head and body are handed over at once. Returns whether the
    connection stays open, or None when ``write_reply`` must do the work.
    """
    if reply.stream is not None or reply.release is not None:
        return None
    transport = conn.transport
    if transport is None or transport.is_closing():
        return None
    parts, _, _, keep = _head(req, reply, keep)
    conn.send(b"".join(parts))  # a whole reply: at the end of the loop turn
    if reply.done is not None:
        _finished(reply)
    return keep


async def write_reply(conn: HttpProtocol, req: Request | None, reply: Reply, *, keep: bool) -> bool:
    """Write ``reply`` on ``conn``; return whether the connection stays open.

    The head and every body byte already at hand go out in one ``write``: a
    complete body, or the chunks a stream can give without waiting (see
    ``take_ready``). A small proxied response thus costs one send(2).
    """
    transport = conn.transport
    if transport is None or transport.is_closing():
        await _release(reply)
        return False
    parts, stream, chunked, keep = _head(req, reply, keep)
    if stream is None:
        conn.send(b"".join(parts))  # a whole reply: at the end of the loop turn
        if reply.release is not None:
            await _release(reply)
        elif reply.done is not None:
            _finished(reply)  # a body reply: no coroutine to end it
        return keep
    try:
        return await _write_stream(conn, transport, stream, parts, chunked, keep)
    except Exception:
        conn.abort()  # truncated: the client must not take it for a whole response
        return False
    finally:
        await _release(reply)


def _head(req: Request | None, reply: Reply, keep: bool
          ) -> tuple[list[bytes], AsyncIterator[bytes] | None, bool, bool]:
    """(the head, with the body when it is complete; the stream to send; chunked; keep)."""
    status = reply.status
    head_only = req is not None and req.method == b"HEAD"
    bodiless = head_only or status in _NO_BODY or status < 200
    headers = reply.headers
    # "name: value" pairs joined in C (no bytecode per field). A stream keeps the
    # upstream's framing; a complete body's own length replaces any given, so a
    # Content-Length (the proxy leaves it out of whole replies) takes the exact path.
    fields = b"\r\n".join(map(_COLON_SPACE_JOIN, headers))
    has_length = False
    if fields.find(b"content-length") >= 0:
        has_length = any(h[0] == b"content-length" for h in headers)
        if has_length and reply.body is not None:
            fields = b"\r\n".join([b": ".join(h) for h in headers if h[0] != b"content-length"])
    parts = [status_line(status, reply.reason), fields, b"\r\n"] if fields \
        else [status_line(status, reply.reason)]
    stream = None if bodiless else reply.stream
    chunked = False
    if reply.body is not None:
        if status not in _NO_BODY and status >= 200:
            parts.append(b"content-length: %d\r\n" % len(reply.body))
    elif stream is not None and not has_length:
        if req is not None and req.version == "1.1":
            chunked = True
            parts.append(_CHUNKED)
        else:
            keep = False  # HTTP/1.0: the end of the body is the close
    if not keep:
        parts.append(_CLOSE)
    parts.append(b"\r\n")
    if stream is None and reply.body is not None and not bodiless:
        parts.append(reply.body)
    return parts, stream, chunked, keep


async def _write_stream(
    conn: HttpProtocol, transport: asyncio.Transport, stream: AsyncIterator[bytes],
    parts: list[bytes], chunked: bool, keep: bool,
) -> bool:
    ready, pending, ended = take_ready(stream, READY_BYTES)
    for chunk in ready:
        _frame(parts, chunk, chunked)
    if ended and chunked:
        parts.append(_LAST_CHUNK)
    conn.write(b"".join(parts))  # now, after anything deferred: a stream needs back-pressure
    if ended:
        return keep
    if pending is not None:
        try:
            first = await pending
        except StopAsyncIteration:
            if chunked:
                transport.write(_LAST_CHUNK)
            return keep
        _send(transport, first, chunked)
        await conn.drain()
    async for chunk in stream:
        _send(transport, chunk, chunked)
        await conn.drain()
    if chunked:
        transport.write(_LAST_CHUNK)
    return keep


def _frame(parts: list[bytes], chunk: bytes, chunked: bool) -> None:
    if chunk:
        if chunked:
            parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            parts.append(chunk)


def _send(transport: asyncio.Transport, chunk: bytes, chunked: bool) -> None:
    if chunk:
        if chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))  # no copy of chunk
        else:
            transport.write(chunk)


def take_ready(
    stream: AsyncIterator[bytes], limit: int
) -> tuple[list[bytes], Awaitable[bytes] | None, bool]:
    """The chunks ``stream`` yields without waiting, up to about ``limit`` bytes.

    Returns ``(chunks, pending, ended)``. Each ``__anext__`` is run eagerly,
    the way Python 3.12's eager tasks run a coroutine: up to its first
    suspension. If it finishes at once its chunk is taken; if it suspends,
    ``pending`` carries it on and must be awaited for the next chunk
    (StopAsyncIteration at the end); ``ended`` says the stream finished. A
    body that arrived with its head is so taken whole, without a trip through
    the event loop. Errors raised by the stream propagate.
    """
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        step = stream.__anext__().__await__()
        try:
            yielded = step.send(None)
        except StopIteration as done:
            chunk: bytes = done.value
            chunks.append(chunk)
            size += len(chunk)
            continue
        except StopAsyncIteration:
            return chunks, None, True
        return chunks, _Resume(step, yielded), False
    return chunks, None, False


class _Resume:
    """Awaiting this continues a step that ``take_ready`` started and that suspended."""

    __slots__ = ("_step", "_yielded")

    def __init__(self, step: Generator[Any, Any, bytes], yielded: Any) -> None:
        self._step = step
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, bytes]:
        step, value = self._step, self._yielded
        while True:
            try:
                sent = yield value  # the future it waits on goes to our task, as with await
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:  # cancellation, or an error thrown in by the task
                try:
                    value = step.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    value = step.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


async def _release(reply: Reply) -> None:
    """``reply.release()`` then ``reply.done()``, each at most once."""
    release = reply.release
    if release is None:
        _finished(reply)
        return
    reply.release = None
    try:
        await release()
    finally:
        _finished(reply)


def _finished(reply: Reply) -> None:
    done = reply.done
    if done is not None:
        reply.done = None
        done()


__all__ = ["READY_BYTES", "status_line", "take_ready", "write_reply", "write_whole"]
