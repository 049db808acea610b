"""The HTTP health probe: one GET, classified as Consul does, with a bounded output.

``probe_http(url, timeout)`` sends ``GET`` over HTTP/1.1 with
``Connection: close``. Any 2xx is passing, 429 warning, any other status, a
timeout before the status and headers arrive, or a connection error is
critical (``qanat.core.health.classify_status``).

The output is Consul's: ``HTTP GET <url>: <code> <reason> Output: <body>``,
with up to ``MAX_OUTPUT`` (4 KiB) of the body (Content-Length, chunked or
until the server closes). Consul keeps the *last* 4 KiB of a body it reads
to the end; we keep the first 4 KiB and stop reading there, so a huge or
endless body costs nothing. A body that stalls after the head has arrived
does not turn an answered status into a failure: once the deadline passes
the status stands with the part of the body read so far.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from qanat.core.health import MAX_OUTPUT, bounded_output, classify_status
from qanat.ports import Health

MAX_LINE = 8192  # bytes of one status or header line; a longer one is a broken server
MAX_HEADERS = 100


async def probe_http(url: str, timeout: float) -> tuple[Health, str]:
    """GET ``url`` once and classify the answer; everything runs within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await _connect(url)
    except TimeoutError:
        return Health.CRITICAL, f"HTTP GET {url}: timed out after {timeout}s"
    except (OSError, ValueError) as exc:
        return Health.CRITICAL, f"HTTP GET {url}: {type(exc).__name__}: {exc}"
    try:
        async with asyncio.timeout_at(deadline):
            code, reason, headers = await _head(reader)
        # The status is in: a slow, broken or endless body only shortens the output.
        with contextlib.suppress(TimeoutError, ValueError, EOFError, asyncio.LimitOverrunError):
            async with asyncio.timeout_at(deadline):
                await _read_body(reader, headers, body, MAX_OUTPUT)
    except TimeoutError:
        return Health.CRITICAL, f"HTTP GET {url}: timed out after {timeout}s"
    except (OSError, ValueError, EOFError, asyncio.LimitOverrunError) as exc:
        return Health.CRITICAL, f"HTTP GET {url}: {type(exc).__name__}: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    text = f"HTTP GET {url}: {code} {reason}".rstrip()
    if body:
        text += " Output: " + bytes(body[:MAX_OUTPUT]).decode("utf-8", errors="replace")
    return classify_status(code), bounded_output(text)


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=True if parts.scheme == "https" else None, limit=MAX_LINE
    )
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: qanat-health\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
    )
    await writer.drain()
    return reader, writer


async def _head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """The status line and the header fields (names lower-cased; the last one wins)."""
    code, reason = parse_status_line(await reader.readuntil(b"\n"))
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = (await reader.readuntil(b"\n")).rstrip(b"\r\n")
        if not line:
            return code, reason, headers
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    raise ValueError(f"more than {MAX_HEADERS} header fields")


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], into: bytearray, limit: int
) -> None:
    """Append up to ``limit`` bytes of the body to ``into`` (kept if this is interrupted)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while len(into) < limit:
            size = int((await reader.readuntil(b"\n")).split(b";")[0].strip(), 16)
            if size == 0:
                return
            into += await reader.readexactly(min(size, limit - len(into)))
            if len(into) >= limit:
                return
            await reader.readexactly(2)  # the CRLF after the chunk
        return
    length = headers.get("content-length")
    want = min(int(length), limit) if length is not None and length.isdigit() else limit
    while len(into) < want:
        chunk = await reader.read(want - len(into))
        if not chunk:
            return  # the server closed: that was the whole body
        into += chunk


def parse_status_line(line: bytes) -> tuple[int, str]:
    """``b"HTTP/1.1 200 OK\\r\\n"`` -> ``(200, "OK")``; ValueError when malformed (RFC 9112 §4)."""
    version, _, rest = line.rstrip(b"\r\n").partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"malformed status line {line[:80]!r}")
    return int(code), reason.decode("latin-1")


__all__ = ["MAX_OUTPUT", "parse_status_line", "probe_http"]
