"""The write coalescer: whole messages of one loop turn go out together, in order."""

from __future__ import annotations

import asyncio

from qanat.http.coalesce import WriteCoalescer, for_loop
from qanat.testing import eventually


class Transport:
    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.log = log
        self.closing = False

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))

    def is_closing(self) -> bool:
        return self.closing


async def test_deferred_writes_wait_for_the_end_of_the_turn_then_go_out_in_order() -> None:
    log: list[tuple[str, bytes]] = []
    a, b = Transport("a", log), Transport("b", log)
    out = WriteCoalescer(asyncio.get_running_loop())
    out.defer(a, b"1")
    out.defer(b, b"2")
    out.defer(a, b"3")
    assert log == [] and out.pending == 3  # nothing sent while the turn runs
    await eventually(lambda: out.pending == 0, what="the end-of-turn flush")
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    assert (out.flushes, out.writes) == (1, 3)  # one callback for the whole turn


async def test_flush_sends_at_once_and_the_scheduled_callback_then_finds_nothing() -> None:
    log: list[tuple[str, bytes]] = []
    a = Transport("a", log)
    loop = asyncio.get_running_loop()
    out = WriteCoalescer(loop)
    out.defer(a, b"head")  # schedules the end-of-turn callback
    after = loop.create_future()
    loop.call_soon(after.set_result, None)  # callbacks run in order: this one after it
    out.flush()
    assert log == [("a", b"head")]
    a.write(b"close-notice")  # what an owner does after flush: order kept
    out.flush()  # idempotent
    await after
    assert log == [("a", b"head"), ("a", b"close-notice")] and out.flushes == 1


async def test_a_transport_that_closed_before_the_flush_drops_its_bytes() -> None:
    log: list[tuple[str, bytes]] = []
    a, b = Transport("a", log), Transport("b", log)
    out = WriteCoalescer(asyncio.get_running_loop())
    out.defer(a, b"lost")
    out.defer(b, b"kept")
    a.closing = True
    out.flush()
    assert log == [("b", b"kept")]


async def test_one_coalescer_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert for_loop(loop) is for_loop(loop)
    other = asyncio.new_event_loop()
    try:
        assert for_loop(other) is not for_loop(loop)
    finally:
        other.close()
