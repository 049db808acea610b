"""Stand-ins for a client connection, for tests of ``gateway.writer``."""

from __future__ import annotations

from typing import Any

from qanat.gateway.hardening import Head
from qanat.gateway.request import Request


class Recorder:
    """A transport that records each write call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.writes.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closing


class Conn:
    """What ``write_reply`` uses of ``HttpProtocol``; ``send`` is not deferred here."""

    def __init__(self) -> None:
        self.transport = Recorder()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    async def drain(self) -> None:
        return None

    def send(self, data: bytes) -> None:  # HttpProtocol defers it to the end of the turn
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        self.transport.write(data)


def request(version: str = "1.1", method: bytes = b"GET") -> Request:
    head = Head(b"h", None, False, False, ())
    return Request(method, b"/", [(b"host", b"h")], head, version, True, None, b"1.2.3.4", b"http")
