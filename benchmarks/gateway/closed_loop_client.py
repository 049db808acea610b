"""Send N GETs over C keep-alive connections, one at a time each; exit. For ``costs.sh``.

Usage: ``python closed_loop_client.py HOST:PORT N C`` (extra request headers in
``$HDRS``, separated by ``|``). Every response must be a 200.
"""

from __future__ import annotations

import asyncio
import os
import sys


async def one(host: str, port: int, n: int, request: bytes) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for _ in range(n):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head[:200]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
    writer.close()


async def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    n, c = int(sys.argv[2]), int(sys.argv[3])
    extra = "".join(f"{h}\r\n" for h in os.environ.get("HDRS", "").split("|") if h)
    request = f"GET / HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()
    await asyncio.gather(*(one(host, int(port), n // c, request) for _ in range(c)))


if __name__ == "__main__":
    asyncio.run(main())
