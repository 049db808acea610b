"""RequestBody: back-pressure between the client socket and the upstream writer."""

from __future__ import annotations

import pytest

from qanat.gateway.body import HIGH_WATER, LOW_WATER, RequestBody
from qanat.gateway.hardening import RequestRejected


class Switch:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")


async def test_pauses_over_high_water_and_resumes_below_low_water() -> None:
    """Reading pauses once more than HIGH_WATER waits, and resumes at LOW_WATER."""
    sw = Switch()
    body = RequestBody(sw.pause, sw.resume)
    chunk = b"x" * 65536
    while body.buffered <= HIGH_WATER:
        body.feed(chunk)
    assert sw.events == ["pause"] and body.pauses == 1
    body.feed(chunk)  # already paused: no second pause
    assert sw.events == ["pause"]
    body.finish()
    got = 0
    async for piece in body:
        got += len(piece)
        if body.buffered > LOW_WATER:
            assert sw.events == ["pause"]
    assert sw.events == ["pause", "resume"]
    assert got == body.received and body.peak > HIGH_WATER


async def test_failure_is_raised_to_the_reader() -> None:
    """fail() makes the consumer raise the rejection (e.g. 413) instead of ending quietly."""
    body = RequestBody(lambda: None, lambda: None)
    body.feed(b"abc")
    body.fail(RequestRejected(413, "too big"))
    with pytest.raises(RequestRejected) as info:
        async for _ in body:
            pass
    assert info.value.status == 413


async def test_continue_is_sent_only_when_the_body_is_read() -> None:
    """'100 Continue' is written on the first read, never if nobody reads the body."""
    sent: list[int] = []
    body = RequestBody(lambda: None, lambda: None, lambda: sent.append(1))
    assert sent == []
    body.feed(b"data")
    body.finish()
    assert [c async for c in body] == [b"data"]
    assert sent == [1]


def test_take_all_returns_the_whole_body() -> None:
    """A body that arrived with the head is handed over in one piece."""
    body = RequestBody(lambda: None, lambda: None)
    body.feed(b"ab")
    body.feed(b"cd")
    body.finish()
    assert body.take_all() == b"abcd" and body.buffered == 0
