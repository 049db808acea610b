"""Observing requests: what each one learns on its way, and its ``Outcome`` at the end.

``Observed`` wraps the gateway's routing when it has observers (metrics, the
access log): a ``Note`` per request, carried by its ``Exchange``
(``exchange.note``), collects the route, the upstream label, the instance the
proxy chose and the error kind of a 5xx the proxy made itself
(``proxy._noted``); once the last byte of the reply is written, the
``Outcome`` goes to every observer (``metrics.py``). Without observers none
of this runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from qanat.gateway.filters import Exchange, Reply
from qanat.gateway.metrics import INTERNAL, UNMATCHED, Observer, Outcome
from qanat.gateway.request import Request
from qanat.gateway.upstream import Target

INTERNAL_PREFIX = b"/__qanat/"
Router = Callable[[Request, "Note | None"], Awaitable[Reply]]


class Note:
    """What an observed request learns on its way: its route, upstream and failure."""

    __slots__ = ("error", "ex", "target", "upstream")

    def __init__(self) -> None:
        self.ex: Exchange | None = None
        self.upstream = ""
        self.target: Target | None = None  # the instance of the last try
        self.error: str | None = None


class Counted:
    """A response stream that counts the bytes it yields (for the access log)."""

    __slots__ = ("_it", "n")

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._it = stream
        self.n = 0

    def __aiter__(self) -> Counted:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._it.__anext__()
        self.n += len(chunk)
        return chunk


class Observed:
    """``route(req, note)`` plus an ``Outcome`` for each of ``observers`` once the
    reply is written; ``in_flight`` counts the requests between the two."""

    def __init__(self, route: Router, observers: list[Observer],
                 clock: Callable[[], float]) -> None:
        self._route = route
        self.observers = observers  # the caller's list: observers added later count
        self._clock = clock
        self.in_flight = 0

    async def __call__(self, req: Request) -> Reply:
        """Route ``req``; report its ``Outcome`` when the reply is written."""
        started, wall = self._clock(), time.time()
        note = Note()
        self.in_flight += 1
        try:
            reply = await self._route(req, note)
        except BaseException as exc:
            self.in_flight -= 1
            if isinstance(exc, Exception):  # the server answers 500 for it
                self._report(req, note, 500, -1, started, wall)
            raise
        counted = None
        if reply.stream is not None:
            reply.stream = counted = Counted(reply.stream)
        before = reply.done

        def done() -> None:  # after the reply's release: a plain call, no coroutine
            try:
                if before is not None:
                    before()
            finally:
                self.in_flight -= 1
                size = len(reply.body) if reply.body is not None else 0
                self._report(req, note, reply.status,
                             counted.n if counted is not None else size, started, wall)

        reply.done = done
        return reply

    def _report(
        self, req: Request, note: Note, status: int, size: int, started: float, wall: float
    ) -> None:
        ex = note.ex
        if ex is not None:
            route, path, rid = ex.route.route.name, ex.path, ex.request_id
        else:
            path = req.target.split(b"?", 1)[0]
            route = INTERNAL if path.startswith(INTERNAL_PREFIX) else UNMATCHED
            rid = b""
        # bytes and the target as they are: an observer that reads them pays for the text
        outcome = Outcome(wall, self._clock() - started, rid, req.peer, req.method, path, route,
                          note.upstream or "none", note.target, status, size, note.error)
        for observer in self.observers:
            observer(outcome)


__all__ = ["Counted", "Note", "Observed"]
