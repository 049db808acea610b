"""What the server hands the application: a validated request head and its body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from qanat.gateway.body import RequestBody
from qanat.gateway.filters import Reply
from qanat.gateway.hardening import Head


class Request:
    """A parsed, validated request head plus its body stream (None when bodiless).

    ``note`` is what an observer keeps for the request while it is answered
    (``observe.Note``; None when nothing observes).
    """

    __slots__ = ("body", "head", "headers", "keep_alive", "method", "note", "peer", "scheme",
                 "target", "version")

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
        self.note: Any = None


App = Callable[[Request], Awaitable[Reply]]


class RequestObserver(Protocol):
    """Told of every request the server hands its app (``observe.Observed``).

    ``begin`` before the app runs; then ``end`` with the reply about to be
    written (the app's, or the 500 the server made for its exception), or
    ``abandon`` when answering was cancelled (the client left, shutdown).
    """

    def begin(self, req: Request) -> None: ...

    def end(self, req: Request, reply: Reply) -> None: ...

    def abandon(self, req: Request) -> None: ...


__all__ = ["App", "Request", "RequestObserver"]
