"""What the server hands the application: a validated request head and its body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from qanat.gateway.body import RequestBody
from qanat.gateway.filters import Reply
from qanat.gateway.hardening import Head


class Request:
    """A parsed, validated request head plus its body stream (None when bodiless)."""

    __slots__ = ("body", "head", "headers", "keep_alive", "method", "peer", "scheme", "target",
                 "version")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        head: Head,
        version: str,
        keep_alive: bool,
        body: RequestBody | None,
        peer: bytes,
        scheme: bytes,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.head = head
        self.version = version
        self.keep_alive = keep_alive
        self.body = body
        self.peer = peer
        self.scheme = scheme


App = Callable[[Request], Awaitable[Reply]]


__all__ = ["App", "Request"]
