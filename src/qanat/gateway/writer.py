"""Writing a ``Reply`` to the client: framing, keep-alive, streaming with back-pressure.

Framing follows RFC 9112 §6: a complete body gets Content-Length; a stream
keeps the upstream's Content-Length when it had one, else is sent chunked to
an HTTP/1.1 client or delimited by close to an HTTP/1.0 one. HEAD, 1xx, 204
and 304 answers carry no body. If a streamed body fails half way the
connection is aborted, so the client sees a truncated message, never a
complete-looking wrong one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qanat.gateway.filters import Reply
from qanat.gateway.problem import reason_phrase

if TYPE_CHECKING:
    from qanat.gateway.connection import HttpProtocol
    from qanat.gateway.request import Request

_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, cached per (status, reason)."""
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))
        if len(_STATUS_LINES) < 512:  # reasons come from upstreams: bound the cache
            _STATUS_LINES[key] = line
    return line


async def write_reply(conn: HttpProtocol, req: Request | None, reply: Reply, *, keep: bool) -> bool:
    """Write ``reply`` on ``conn``; return whether the connection stays open."""
    transport = conn.transport
    if transport is None or transport.is_closing():
        await _release(reply)
        return False
    status = reply.status
    head_only = req is not None and req.method == b"HEAD"
    bodiless = head_only or status in (204, 304) or status < 200
    parts = [status_line(status, reply.reason)]
    has_length = False
    for name, value in reply.headers:
        if name == b"content-length":
            if reply.body is not None:
                continue  # we set it from the body below
            has_length = True
        parts.append(name + b": " + value + b"\r\n")
    chunked = False
    if reply.body is not None:
        if status not in (204, 304) and status >= 200:
            parts.append(b"content-length: %d\r\n" % len(reply.body))
    elif reply.stream is not None and not bodiless and not has_length:
        if req is not None and req.version == "1.1":
            chunked = True
            parts.append(_CHUNKED)
        else:
            keep = False  # HTTP/1.0: the end of the body is the close
    if not keep:
        parts.append(_CLOSE)
    parts.append(b"\r\n")
    if reply.body is not None and not bodiless:
        parts.append(reply.body)
    transport.write(b"".join(parts))
    if reply.stream is None or bodiless:
        await _release(reply)
        return keep
    try:
        async for chunk in reply.stream:
            if not chunk:
                continue
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            await conn.drain()
        if chunked:
            transport.write(b"0\r\n\r\n")
    except Exception:
        conn.abort()  # truncated: the client must not take it for a whole response
        return False
    finally:
        await _release(reply)
    return keep


async def _release(reply: Reply) -> None:
    if reply.release is not None:
        release, reply.release = reply.release, None
        await release()


__all__ = ["write_reply"]
