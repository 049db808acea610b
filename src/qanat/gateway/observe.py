"""Observing requests: what each one learns on its way, and its ``Outcome`` at the end.

``Observed`` is the server's request observer (``request.RequestObserver``)
when the gateway has observers (metrics, the access log): ``begin`` gives
each request a ``Note`` (``req.note``, then ``exchange.note``) that collects
the route, the upstream label, the instance the proxy chose and the error
kind of a 5xx the proxy made itself (``proxy._noted``); ``end`` has the
``Outcome`` go to every observer once the last byte of the reply is written
(``metrics.py``). The connection calls both around the app: no coroutine of
its own per request. Without observers none of this runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from qanat.gateway.filters import Exchange, Reply
from qanat.gateway.metrics import INTERNAL, UNMATCHED, Observer, Outcome
from qanat.gateway.request import Request
from qanat.gateway.upstream import Target

INTERNAL_PREFIX = b"/__qanat/"


class Note:
    """What an observed request learns on its way: its route, upstream and failure."""

    __slots__ = ("error", "ex", "started", "target", "upstream", "wall")

    def __init__(self, started: float = 0.0, wall: float = 0.0) -> None:
        self.started = started  # the observer's clock when the request was handed over
        self.wall = wall  # Unix time, the same moment
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
    """An ``Outcome`` for each of ``observers`` once a reply is written;
    ``in_flight`` counts the requests between ``begin`` and the end of the reply."""

    def __init__(self, observers: list[Observer], clock: Callable[[], float]) -> None:
        self.observers = observers  # the caller's list: observers added later count
        self._clock = clock
        self.in_flight = 0

    def begin(self, req: Request) -> None:
        """A request goes to the app: give it its ``Note``."""
        req.note = Note(self._clock(), time.time())
        self.in_flight += 1

    def abandon(self, req: Request) -> None:
        """Answering ``req`` was cancelled: no reply, no outcome."""
        self.in_flight -= 1
        req.note.ex = None  # the exchange points back at the note: no cycle for the GC

    def end(self, req: Request, reply: Reply) -> None:
        """``reply`` is about to be written: report once it has been (``Reply.done``)."""
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
                self._report(req, reply.status, counted.n if counted is not None else size)

        reply.done = done

    def _report(self, req: Request, status: int, size: int) -> None:
        note: Note = req.note
        ex = note.ex
        if ex is not None:
            note.ex = None  # the exchange points back at the note: no cycle for the GC
            route, path, rid = ex.route.route.name, ex.path, ex.request_id
        else:
            path = req.target.split(b"?", 1)[0]
            route = INTERNAL if path.startswith(INTERNAL_PREFIX) else UNMATCHED
            rid = b""
        # bytes and the target as they are: an observer that reads them pays for the text
        outcome = Outcome(note.wall, self._clock() - note.started, rid, req.peer, req.method,
                          path, route, note.upstream or "none", note.target, status, size,
                          note.error)
        for observer in self.observers:
            observer(outcome)


__all__ = ["Counted", "Note", "Observed"]
