"""A stand-in for a service instance: answers HTTP on the socket the supervisor hands over.

``python fake_instance.py --fd N``. ``FAKE_MODE`` picks a behaviour:
``serve`` (default) answers every request with 200 and exits 0 on SIGTERM;
``crash`` prints "boom" and exits 1 at once; ``slow-term`` takes
``FAKE_TERM_SECONDS`` (default 1) to exit after SIGTERM, like a drain;
``ignore-term`` never exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys


async def serve(sock: socket.socket, mode: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = str(os.getpid()).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if mode == "ignore-term":
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("fake instance serving", flush=True)
    async with server:
        await stop.wait()
        print("fake instance got SIGTERM", flush=True)
        if mode == "slow-term":
            await asyncio.sleep(float(os.environ.get("FAKE_TERM_SECONDS", "1")))  # the "drain"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    mode = os.environ.get("FAKE_MODE", "serve")
    if mode == "crash":
        print("boom", flush=True)
        sys.exit(1)
    asyncio.run(serve(socket.socket(fileno=args.fd), mode))


if __name__ == "__main__":
    main()
