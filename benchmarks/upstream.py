"""A minimal, fast upstream HTTP/1.1 server for client and gateway benchmarks.

Run: ``python benchmarks/upstream.py --port 8001`` (``--port 0`` picks a free
port). Once listening it prints ``listening on 127.0.0.1:PORT`` on stdout, so
a benchmark can wait for that line instead of sleeping.

It answers every request with the same small keep-alive ``200`` (a fixed
body of ``--body-size`` bytes, ``Hello, world!`` by default), reading request
bodies of any framing with ``httptools``. A raw asyncio Protocol on uvloop
(``--loop asyncio`` for the default loop): the upstream should never be the
bottleneck of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import httptools


def make_response(body_size: int) -> bytes:
    body = (b"Hello, world!" * (body_size // 13 + 1))[:body_size]
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )


class UpstreamProtocol(asyncio.Protocol):
    """Parse requests with httptools; answer each complete one with the fixed response."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(self.response)
            if not self.parser.should_keep_alive():
                self.transport.close()


async def serve(host: str, port: int, body_size: int) -> None:
    loop = asyncio.get_running_loop()
    response = make_response(body_size)
    server = await loop.create_server(
        lambda: UpstreamProtocol(response), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--body-size", type=int, default=13)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args(argv)
    coro = serve(args.host, args.port, args.body_size)
    try:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
