"""A tiny HTTP/1.1 GET for readiness probes (no pooling: one request per connection)."""

from __future__ import annotations

import asyncio


async def http_status(host: str, port: int, path: str, timeout: float) -> int | None:
    """The status code of ``GET path``, or None if the instance did not answer in time."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Connection: close\r\nUser-Agent: qanat-probe\r\n\r\n".encode()
                )
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            return None
        return int(parts[1])
    except (OSError, TimeoutError, ValueError):
        return None
