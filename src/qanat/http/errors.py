"""Errors of the upstream HTTP client, grouped by what a caller can do.

Every error carries ``request_sent``: ``False`` means no byte of the request
reached the upstream, so *any* method may be retried elsewhere. When it is
``True``, ``response_started`` and ``reused`` tell whether the failure is the
classic stale keep-alive race (a reused connection that died before any
response byte): then an idempotent request may be retried once on a fresh
connection (RFC 9110 §9.2.2; Go's ``net/http`` ``shouldRetryRequest`` makes the
same call). :func:`retry_safe` encodes that rule.

- ``ConnectError`` (also an ``Unavailable``): no connection could be made.
- ``PoolOverloaded`` (also an ``Overloaded``): the per-host wait queue is full.
- ``UpstreamTimeout`` (also a ``Timeout``): the head (or body) did not arrive in time.
- ``UpstreamReset``: the connection closed before a full response.
- ``UpstreamProtocolError``: the upstream sent something that is not HTTP/1.1.
- ``BodyTooLarge``: ``read(max_bytes=...)`` saw more than allowed.
- ``InvalidRequest`` (also a ``ValueError``): the caller's request cannot be sent.
"""

from __future__ import annotations

from qanat.errors import Overloaded, QanatError, Timeout, Unavailable

#: Methods whose repetition has the same effect as one call (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"}
)


class UpstreamError(QanatError):
    """An upstream call failed; ``request_sent`` says whether the upstream may have seen it.

    ``response_started``: some byte of the response had arrived.
    ``reused``: the connection had served an earlier request (keep-alive).
    """

    def __init__(
        self,
        message: str,
        *,
        request_sent: bool,
        response_started: bool = False,
        reused: bool = False,
    ) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.response_started = response_started
        self.reused = reused


class ConnectError(UpstreamError, Unavailable):
    """The TCP connection could not be made (refused, unreachable, timed out)."""

    retry_condition = "connect-failure"  # Envoy's name, read by RetryPolicy.retryable_error

    def __init__(self, message: str) -> None:
        UpstreamError.__init__(self, message, request_sent=False)
        self.retry_after = None


class PoolOverloaded(UpstreamError, Overloaded):
    """Every connection to the host is busy and the wait queue is full; shed at once."""

    def __init__(self, message: str) -> None:
        UpstreamError.__init__(self, message, request_sent=False)
        self.retry_after = None


class UpstreamTimeout(UpstreamError, Timeout):
    """The response head (or, with ``body_timeout``, the next body byte) came too late."""


class UpstreamReset(UpstreamError):
    """The connection was closed or reset before the response was complete."""

    retry_condition = "reset"  # Envoy's name, read by RetryPolicy.retryable_error


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not valid HTTP/1.1 (or the head is too large)."""


class BodyTooLarge(UpstreamError):
    """The response body is larger than the ``max_bytes`` the caller accepts."""


class InvalidRequest(UpstreamError, ValueError):
    """The request cannot be sent as given (e.g. CR/LF inside a header).

    Usually raised before anything is sent; a streamed body that disagrees with
    its ``content-length`` is found out mid-way (``request_sent=True``).
    """

    def __init__(self, message: str, *, request_sent: bool = False) -> None:
        UpstreamError.__init__(self, message, request_sent=request_sent)


def retry_safe(error: UpstreamError, method: bytes) -> bool:
    """Whether ``error`` proves a retry of ``method`` cannot apply the request twice.

    True when the upstream never saw the request, or when the request is
    idempotent and died on a reused keep-alive connection before any response
    byte (the server most likely closed the idle connection as it was sent).
    """
    if not error.request_sent:
        return True
    return (
        isinstance(error, UpstreamReset)
        and error.reused
        and not error.response_started
        and method.upper() in IDEMPOTENT_METHODS
    )


__all__ = [
    "IDEMPOTENT_METHODS",
    "BodyTooLarge",
    "ConnectError",
    "InvalidRequest",
    "PoolOverloaded",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamReset",
    "UpstreamTimeout",
    "retry_safe",
]
