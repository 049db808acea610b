"""``buffer_response_bytes``: its validation, and ``UpstreamResponse.wait_complete``."""

from __future__ import annotations

import asyncio

import pytest

from qanat.errors import ConfigError
from qanat.gateway.buffering import bufferable, wait_body
from qanat.gateway.config import parse_routes
from qanat.http import UpstreamReset, UpstreamResponse, UpstreamTimeout

UP = {"kind": "static", "targets": [{"url": "http://127.0.0.1:9"}]}


class Source:
    """The connection side of a response: records pause/resume/abort."""

    def __init__(self) -> None:
        self.paused = False
        self.aborted = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.aborted = True


def test_the_default_bound_is_64_kib_and_zero_turns_buffering_off() -> None:
    """A route buffers responses up to 64 KiB unless it says otherwise; 0 is accepted."""
    (default, off) = parse_routes([{"name": "a", "upstream": UP},
                                   {"name": "b", "upstream": UP, "buffer_response_bytes": 0}])
    assert default.buffer_response_bytes == 64 * 1024 and off.buffer_response_bytes == 0


@pytest.mark.parametrize("value", [-1, (1 << 20) + 1, "64k"])
def test_a_bad_bound_is_a_config_error_naming_the_field(value: object) -> None:
    """A negative, over-1-MiB or non-integer bound is refused with the field's name."""
    with pytest.raises(ConfigError, match="buffer_response_bytes"):
        parse_routes([{"name": "a", "upstream": UP, "buffer_response_bytes": value}])


async def test_wait_complete_keeps_the_whole_body_for_the_reader() -> None:
    """Waiting consumes nothing: the body fed in pieces is all there afterwards."""
    src = Source()
    resp = UpstreamResponse(200, b"OK", [], "1.1", src, asyncio.get_running_loop(),
                            high_water=4)
    resp._feed(b"hello ")  # over high_water: the connection pauses reading
    assert src.paused
    waiting = asyncio.ensure_future(resp.wait_complete())
    await asyncio.sleep(0)  # let the waiter start (it resumes reading); not a timing wait
    assert not src.paused and not waiting.done()
    resp._feed(b"world")
    resp._end()
    await waiting
    assert resp.take_complete(100) == b"hello world"


async def test_wait_complete_raises_the_reset_and_releases_the_response() -> None:
    """A body cut by the upstream fails the wait with its reset; the response is closed."""
    src = Source()
    resp = UpstreamResponse(200, b"OK", [], "1.1", src, asyncio.get_running_loop())
    resp._feed(b"part")
    waiting = asyncio.ensure_future(resp.wait_complete())
    await asyncio.sleep(0)
    resp._fail(UpstreamReset("cut", request_sent=True, response_started=True))
    with pytest.raises(UpstreamReset):
        await waiting
    assert resp.take_complete(100) is None


async def test_a_cancelled_wait_aborts_the_connection() -> None:
    """Cancelled (the try's timeout), the wait releases the response and aborts its connection."""
    src = Source()
    resp = UpstreamResponse(200, b"OK", [], "1.1", src, asyncio.get_running_loop())
    waiting = asyncio.ensure_future(resp.wait_complete())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert src.aborted


@pytest.mark.parametrize(("method", "status", "length", "held"), [
    (b"GET", 200, b"100", True),
    (b"GET", 200, b"1024", True),  # the bound itself is held
    (b"GET", 200, b"1025", False),
    (b"GET", 200, None, False),  # chunked: no length, streams
    (b"GET", 200, b"-1", False),
    (b"HEAD", 200, b"100", False),
    (b"GET", 204, b"100", False),
    (b"GET", 304, b"100", False),
    (b"GET", 101, b"100", False),
    (b"POST", 503, b"100", True),
])
async def test_which_responses_are_held(method: bytes, status: int, length: bytes | None,
                                  held: bool) -> None:
    """Only a body with a Content-Length at most the bound, on a status that has one, is held."""
    headers = [] if length is None else [(b"Content-Length", length)]
    resp = UpstreamResponse(status, b"X", headers, "1.1", Source(), asyncio.get_running_loop())
    assert bufferable(resp, method, 1024) is held


async def test_a_body_slower_than_the_try_is_an_upstream_timeout() -> None:
    """With no time left in the try, waiting for the body fails as a timeout and aborts."""
    src = Source()
    resp = UpstreamResponse(200, b"OK", [], "1.1", src, asyncio.get_running_loop())
    with pytest.raises(UpstreamTimeout) as info:
        await wait_body(resp, 0.0)
    assert info.value.request_sent and src.aborted
