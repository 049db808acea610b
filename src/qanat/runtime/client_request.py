"""Pure helpers of the service client: build a request once, decide about each retry.

Nothing here awaits, sleeps or logs: the request is turned into bytes once
per call (``prepare``), and ``retry_delay`` says whether and when the next
attempt goes, from the outcome of the last one.

Retry safety (RFC 9110 §9.2.2, Envoy's router, Go's ``net/http``): a request
may be repeated when repeating it cannot apply it twice, that is when its
method is idempotent, when it carries an ``Idempotency-Key`` (IETF httpapi
draft: the server replays the first answer), or when the upstream never saw
it (the connection was refused, or a reused keep-alive connection died
before an idempotent request's answer began: ``qanat.http.retry_safe``).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Mapping
from random import getrandbits
from typing import Any
from urllib.parse import urlencode

from qanat.core.outlier import CallError
from qanat.core.retry import RetryPolicy, parse_retry_after
from qanat.errors import ConfigError, Timeout
from qanat.http import (
    IDEMPOTENT_METHODS,
    BodyTooLarge,
    InvalidRequest,
    PoolOverloaded,
    UpstreamError,
    retry_safe,
)
from qanat.observability import context
from qanat.runtime.client_response import ClientResponse

#: Headers the client writes itself on every attempt; a caller's value is dropped.
MANAGED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection",
     context.BUDGET_HEADER.encode(), b"traceparent", b"tracestate"}
)
_IDEMPOTENCY = b"idempotency-key"
_REQUEST_ID = context.REQUEST_ID_HEADER.encode()

# What each kind of failure counts as among the retry conditions (``RetryPolicy.retry_on``).
# As in Envoy, ``5xx`` and ``gateway-error`` include connect failures and resets.
_NEVER_SENT = frozenset({"connect-failure", "5xx", "gateway-error", "unavailable"})
_OVERLOADED = frozenset({"unavailable"})
_TIMED_OUT = frozenset({"timeout", "5xx"})
_BROKEN = frozenset({"reset", "5xx", "gateway-error"})
_NOTHING: frozenset[str] = frozenset()


class Prepared:
    """A request ready to send to any instance: only ``host`` and the budget vary per attempt.

    ``repeatable``: an idempotent method or an idempotency key, so sending it
    twice is safe. (A plain slotted class: built once per call, on the hot path.)
    """

    __slots__ = ("body", "headers", "repeatable", "target", "verb")

    def __init__(
        self,
        verb: bytes,
        target: bytes,
        body: bytes | None,
        headers: list[tuple[bytes, bytes]],
        repeatable: bool,
    ) -> None:
        self.verb = verb
        self.target = target
        self.body = body
        self.headers = headers
        self.repeatable = repeatable


def prepare(
    method: str,
    path: str,
    params: Mapping[str, str | int] | None,
    json: Any,
    content: bytes | None,
    headers: Mapping[str, str] | None,
    idempotency_key: str | None,
) -> Prepared:
    """Validate and encode a call; raises ``ConfigError`` naming what is wrong.

    A caller's ``x-request-id`` or ``idempotency-key`` header is kept (and an
    ``Idempotency-Key`` header makes a write retryable, as the keyword does);
    headers the client manages (``MANAGED``) are replaced by its own.
    """
    where = f"ServiceClient.request({method!r}, {path!r})"
    if not path.startswith("/"):
        raise ConfigError("the path must start with '/', e.g. '/users/1'", source=where)
    if json is not None and content is not None:
        raise ConfigError("pass json= or content=, not both", source=where)
    verb = method.upper().encode("ascii")
    if params:
        path = path + ("&" if "?" in path else "?") + urlencode(params)
    out: list[tuple[bytes, bytes]] = []
    rid = context.request_id.get()
    key = idempotency_key
    if headers:
        for name, value in headers.items():
            lname = name.lower().encode("latin-1")
            if lname in MANAGED:
                continue
            if lname == _REQUEST_ID:
                rid = value
                continue
            if lname == _IDEMPOTENCY:
                key = value if key is None else key
                continue
            out.append((lname, _latin1(value, name, where)))
    body = content
    if json is not None:
        body = jsonlib.dumps(json, separators=(",", ":")).encode()
        out.append((b"content-type", b"application/json"))
    # Not a secret, only unique: the process's PRNG, no syscall per call.
    made = rid.encode("latin-1") if rid else getrandbits(128).to_bytes(16).hex().encode()
    out.append((_REQUEST_ID, made))
    if key is not None:
        out.append((_IDEMPOTENCY, _latin1(key, "idempotency key", where)))
    if body is not None:
        out.append((b"content-length", b"%d" % len(body)))
    return Prepared(verb, path.encode("utf-8"), body, out,
                    verb in IDEMPOTENT_METHODS or key is not None)


def check_timeout(timeout: float) -> float:
    """A call's ``timeout=`` as float seconds; ``ConfigError`` unless it is a number > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(
            f"timeout must be seconds > 0, got {timeout!r}", source="ServiceClient.request"
        )
    return float(timeout)


def _latin1(value: str, name: str, where: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(
            f"header {name!r} has characters outside ISO-8859-1; percent-encode them",
            source=where,
        ) from None


def conditions(error: BaseException) -> frozenset[str]:
    """The ``retry_on`` conditions a failed attempt satisfies (empty: never retry it)."""
    if isinstance(error, InvalidRequest | BodyTooLarge):
        return _NOTHING  # the caller's request or its size limit: another try changes nothing
    if isinstance(error, PoolOverloaded):
        return _OVERLOADED
    if isinstance(error, Timeout):
        return _TIMED_OUT
    if isinstance(error, UpstreamError):
        return _BROKEN if error.request_sent else _NEVER_SENT
    return _NOTHING


def failure_verdict(
    error: UpstreamError, status: int | None
) -> tuple[bool | None, int | CallError | None]:
    """How a failed attempt counts: (breaker verdict, outlier outcome).

    The verdict is True (success), False (failure) or None (excluded: not
    the instance's doing, e.g. an invalid request or the local pool's queue
    being full); the outlier outcome is a status or a ``CallError``, or None
    to record nothing. ``status`` is the response's, when its head arrived.
    """
    if isinstance(error, InvalidRequest | PoolOverloaded):
        return None, None
    if isinstance(error, BodyTooLarge) and status is not None:
        return status < 500, status  # a complete answer, only larger than we accept
    if isinstance(error, Timeout):
        return False, CallError.TIMEOUT
    if not error.request_sent:
        return False, CallError.CONNECT_FAILURE
    return False, CallError.RESET


def retry_delay(
    policy: RetryPolicy,
    outcome: ClientResponse | BaseException,
    prepared: Prepared,
    attempt: int,
    elapsed: float,
    previous: float | None,
    rng: Callable[[], float],
    wall_now: Callable[[], float],
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None to stop with ``outcome``.

    A response is retried when the request is repeatable and its status is
    in ``policy.retry_on``; a ``Retry-After`` (seconds or an HTTP-date, read
    with ``wall_now``) replaces the backoff. An error is retried when the
    request is repeatable or provably never reached the upstream, and its
    kind (``conditions``) is in ``policy.retry_on``.
    """
    retry_after = None
    if isinstance(outcome, ClientResponse):
        if not (prepared.repeatable and policy.retryable_status(outcome.status)):
            return None
        value = outcome.header("retry-after")
        if value is not None:
            retry_after = parse_retry_after(value, wall_now())
    else:
        unseen = isinstance(outcome, UpstreamError) and retry_safe(outcome, prepared.verb)
        if not (prepared.repeatable or unseen) or not (conditions(outcome) & policy.retry_on):
            return None
    return policy.next_delay(attempt, elapsed, retry_after, rng, previous=previous)


__all__ = [
    "MANAGED", "Prepared", "check_timeout", "conditions", "failure_verdict", "prepare",
    "retry_delay",
]
