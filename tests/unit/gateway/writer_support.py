"""A real client connection on a recording transport, for tests of ``gateway.writer``."""

from __future__ import annotations

import asyncio
from typing import Any

from qanat.gateway.connection import HttpProtocol
from qanat.gateway.filters import Reply
from qanat.gateway.hardening import Head
from qanat.gateway.request import Request
from qanat.gateway.server import HttpServer
from qanat.http.coalesce import for_loop


class Recorder:
    """A transport that records each write call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.writes.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("1.2.3.4", 5678) if name == "peername" else default


async def _no_app(req: Request) -> Reply:  # pragma: no cover - nothing is served here
    raise AssertionError("write_reply tests serve no request")


def connection() -> HttpProtocol:
    """A real client connection (the writer is compiled against the class) on a
    ``Recorder``; call in a running loop. Whole replies are deferred to the end of
    the loop turn: ``written`` sends them first."""
    conn = HttpProtocol(HttpServer(_no_app))
    conn.connection_made(Recorder())  # type: ignore[arg-type]
    return conn


def recorder(conn: HttpProtocol) -> Recorder:
    transport: Any = conn.transport
    assert isinstance(transport, Recorder)
    return transport


def written(conn: HttpProtocol) -> list[bytes]:
    """The transport's writes, once the loop's deferred writes are sent (as at the
    end of this loop turn)."""
    for_loop(asyncio.get_running_loop()).flush()
    return recorder(conn).writes


def request(version: str = "1.1", method: bytes = b"GET") -> Request:
    head = Head(b"h", None, False, False, ())
    return Request(method, b"/", [(b"host", b"h")], head, version, True, None, b"1.2.3.4", b"http")
