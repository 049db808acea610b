"""Small-response buffering: hold a response's head until its whole body is here.

nginx's ``proxy_buffering on`` with ``proxy_next_upstream``: a try may be
retried only while nothing went to the client, so a response of at most the
route's ``buffer_response_bytes`` (by ``Content-Length``) is read whole first;
an upstream that resets mid-body then fails the try, not the client's response.
A chunked or larger body, ``HEAD`` and 1xx/204/304 answers are not held.
"""

from __future__ import annotations

import asyncio

from qanat.http import UpstreamResponse, UpstreamTimeout

_NO_BODY_STATUS = frozenset((204, 304))


def bufferable(resp: UpstreamResponse, method: bytes, limit: int) -> bool:
    """Whether ``resp`` has a body of known length of at most ``limit`` bytes."""
    if method == b"HEAD" or resp.status < 200 or resp.status in _NO_BODY_STATUS:
        return False
    length = resp.header(b"content-length")
    return length is not None and length.isdigit() and int(length) <= limit


async def wait_body(resp: UpstreamResponse, left: float) -> None:
    """Wait for ``resp``'s whole body for at most ``left`` seconds (the try's time)."""
    try:
        async with asyncio.timeout(max(left, 0.0)):
            await resp.wait_complete()
    except TimeoutError:
        raise UpstreamTimeout("the response body did not arrive within the try's timeout",
                              request_sent=True, response_started=True) from None


__all__ = ["bufferable", "wait_body"]
