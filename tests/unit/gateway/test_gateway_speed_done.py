"""``Reply.done``: the synchronous end-of-reply hook observers use instead of a coroutine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.unit.gateway.writer_support import connection, recorder, written
from tests.unit.gateway.writer_support import request as _req

from qanat.gateway.filters import Reply
from qanat.gateway.metrics import Outcome
from qanat.gateway.observe import Note, Observed
from qanat.gateway.writer import write_reply
from qanat.testing import FakeClock


async def test_a_body_reply_calls_done_once_after_its_bytes_are_written() -> None:
    """``done`` runs once, after the response was handed to the connection (sending
    what the loop turn deferred, from ``done``, finds it)."""
    conn = connection()
    calls: list[int] = []
    reply = Reply(200, [], b"hi", done=lambda: calls.append(len(written(conn))))
    assert await write_reply(conn, _req(), reply, keep=True)
    assert calls == [1] and reply.done is None


async def test_done_follows_release_even_when_release_fails() -> None:
    """For a stream, ``release`` runs first, then ``done``, even if ``release`` raises."""
    order: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    async def release() -> None:
        order.append("release")
        raise RuntimeError("release failed")

    reply = Reply(200, [], stream=chunks(), release=release, done=lambda: order.append("done"))
    with pytest.raises(RuntimeError):
        await write_reply(connection(), _req(), reply, keep=True)
    assert order == ["release", "done"]


async def test_a_closed_connection_still_calls_done() -> None:
    """A reply never written (the client is gone) still ends: ``done`` is called."""
    conn = connection()
    recorder(conn).closing = True
    calls: list[bool] = []
    reply = Reply(200, [], b"hi", done=lambda: calls.append(True))
    assert not await write_reply(conn, _req(), reply, keep=True)
    assert calls == [True] and written(conn) == []


async def test_observed_body_reply_has_no_release_and_reports_once() -> None:
    """Observed wraps a body reply with ``done`` only; the outcome comes once, after."""
    seen: list[Outcome] = []
    observed = Observed([seen.append], FakeClock())
    req = _req()
    observed.begin(req)
    assert isinstance(req.note, Note) and observed.in_flight == 1
    reply = Reply(200, [], b"hello")
    observed.end(req, reply)
    assert reply.release is None and observed.in_flight == 1 and seen == []
    await write_reply(connection(), req, reply, keep=True)
    assert observed.in_flight == 0
    assert [(o.status, o.bytes) for o in seen] == [(200, 5)]


async def test_observed_keeps_an_inner_done_hook() -> None:
    """A ``done`` set by the handler still runs before the observer reports."""
    order: list[Any] = []
    observed = Observed([lambda o: order.append(o.status)], FakeClock())
    req = _req()
    observed.begin(req)
    reply = Reply(204, [], done=lambda: order.append("inner"))
    observed.end(req, reply)
    await write_reply(connection(), req, reply, keep=True)
    assert order == ["inner", 204]


def test_an_abandoned_request_leaves_the_count_and_reports_nothing() -> None:
    """Answering cancelled (the client left): in flight goes back down, no outcome."""
    seen: list[Outcome] = []
    observed = Observed([seen.append], FakeClock())
    req = _req()
    observed.begin(req)
    observed.abandon(req)
    assert observed.in_flight == 0 and seen == []
