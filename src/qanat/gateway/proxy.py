"""The innermost handler: forward an exchange to its route's upstream, with retries.

Per request (Envoy's router, in this order): the route's concurrency limit
(``max_concurrent``; full -> 503 at once); then up to ``1 + num_retries``
tries, each to a target ``Upstream.choose`` picks (breakers, outlier
ejection, canary subset, untried instances first), bounded by the per-try
timeout and by what is left of the route ``timeout``, which covers every try
and the backoff between them. A failed try is retried only when
``resilience.retry_allowed`` says it is safe and named in ``retry_on``, the
retry budget has room, and the backoff (full jitter from 25 ms) ends before
the route deadline. An upstream's ``Retry-After`` replaces the backoff when it
is at most ``retry.max_retry_after`` (a longer one is not retried). A POST or
PATCH with an ``Idempotency-Key`` header is retried like a PUT when the route
says ``retry.idempotency_key: true``. Retries happen before the response head
is passed on; once the client has a status line, nothing is retried. So a
response of at most ``buffer_response_bytes`` (by ``Content-Length``) is read
whole before its head goes on (nginx's ``proxy_buffering``): an upstream cut
mid-body then fails the try while nothing has been sent, and it is retried.

A request body that streams from the client can be sent again only if it was
buffered: with a retry policy, a body of at most ``retry.max_buffered_body``
bytes (64 KiB) is read whole before the first try; a larger one streams, and
is retried only when the upstream never saw a byte of it (connect failure).

Errors map to problem details (RFC 9457): no endpoint, every breaker open,
the route full, or a full upstream queue -> 503; connect failure, reset or a
malformed response -> 502; the timeout elapsed -> 504. When retries run out
on a response, that response (say a 503) is what the client gets, as Envoy does.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable

from qanat.core.retry import RetryPolicy, parse_retry_after
from qanat.gateway.body import RequestBody
from qanat.gateway.buffering import bufferable, wait_body
from qanat.gateway.filters import Exchange, HeaderList, Reply
from qanat.gateway.hardening import RequestRejected
from qanat.gateway.headers import forward_request_headers, forward_response_headers
from qanat.gateway.metrics import error_kind
from qanat.gateway.problem import problem
from qanat.gateway.replay import replayable
from qanat.gateway.resilience import call_error, has_idempotency_key, retry_allowed
from qanat.gateway.route_runtime import RouteRuntime, RouteState, snapshot
from qanat.gateway.routing import Route
from qanat.gateway.upstream import Pick, Refusal, Upstream
from qanat.http import HttpPool, PoolOverloaded, UpstreamError, UpstreamResponse, UpstreamTimeout

_NO_BODY_STATUS = frozenset((204, 304))
INLINE_BYTES = 64 * 1024  # a complete upstream body up to this size is passed on as bytes


class Proxy:
    """``await proxy(exchange) -> Reply``: the handler at the centre of every filter chain.

    ``clock`` times tries and breakers; ``rng`` draws the backoff jitter;
    ``sleep`` waits between tries; ``wall`` (Unix time) reads a ``Retry-After``
    given as an HTTP-date.
    """

    def __init__(
        self,
        pool: HttpPool,
        clock: Callable[[], float] = time.monotonic,
        *,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._rng = rng
        self._sleep = sleep
        self._wall = wall

    def __call__(self, ex: Exchange) -> Awaitable[Reply]:
        # Plain functions returning the coroutine that does the work: one
        # coroutine per request instead of a chain of three.
        rt: RouteRuntime = ex.route
        if rt.max_concurrent is None:
            return self._forward(ex, rt)
        return self._limited(ex, rt, rt.max_concurrent)

    async def _limited(self, ex: Exchange, rt: RouteRuntime, limit: int) -> Reply:
        load = rt.load  # shared with the route's runtime in the next set (live reload)
        if load.in_flight >= limit:
            load.overflow += 1
            return _noted(ex, problem(503, f"route {rt.route.name!r} has {limit} requests in "
                                      "flight (max_concurrent)", ex.request_id,
                                      slug="route-overloaded"))
        load.in_flight += 1
        try:
            reply = await self._forward(ex, rt)
        except BaseException:
            load.in_flight -= 1
            raise
        inner = reply.release
        if inner is None:
            load.in_flight -= 1
            return reply

        async def release() -> None:  # the request ends when its response body does
            try:
                await inner()
            finally:
                load.in_flight -= 1

        reply.release = release
        return reply

    def _forward(self, ex: Exchange, rt: RouteRuntime) -> Awaitable[Reply]:
        route = rt.route
        headers = forward_request_headers(
            ex.headers, ex.connection, host=route.host_rewrite or ex.authority, peer=ex.peer,
            proto=ex.scheme, request_id=ex.request_id, forwarded_host=ex.authority,
            edit=route.request_edit,
        )
        policy = rt.retry
        if policy is None:
            return self._once(ex, rt, headers)
        return self._retrying(ex, rt, headers, policy)

    async def _once(self, ex: Exchange, rt: RouteRuntime, headers: HeaderList) -> Reply:
        """``_tries`` for a route without a retry policy: one try, no loop, no budget."""
        clock, upstream = self._clock, rt.upstream
        now = clock()
        choice = upstream.choose(ex.headers, (), now, ex.peer)
        if isinstance(choice, Refusal):
            return _noted(ex, _refusal(ex, choice, rt.route.name))
        target = choice.target
        if ex.note is not None:  # an observed request: the instance it went to
            ex.note.target = target
        timeout = rt.timeout  # at most the route's total timeout (RouteRuntime)
        buffer = rt.buffer_response_bytes
        try:
            resp = await self._pool.request(
                method=ex.method, host=target.host, port=target.port,
                target=rt.route.rewrite(ex.path) + ex.query, headers=headers, body=ex.body,
                timeout=timeout)
            if not resp.complete and buffer and bufferable(resp, ex.method, buffer):
                await wait_body(resp, timeout - (clock() - now))
        except Exception as error:
            self._settle_failure(upstream, choice, error, now)
            return _noted(ex, self._failure(ex, error, rt.route.name))
        except BaseException:  # cancelled (client gone, shutdown): free the breaker slot
            upstream.settle(choice, None, 0.0, clock())
            raise
        end = clock()
        upstream.settle(choice, resp.status, end - now, end)
        return _reply(ex, resp, rt.route)

    def _settle_failure(self, upstream: Upstream, choice: Pick, error: Exception,
                        start: float) -> None:
        """Close a try that failed with ``error``: breaker and balancer learn its kind."""
        end = self._clock()
        kind = call_error(error) if isinstance(error, UpstreamError) else None
        upstream.settle(choice, kind, end - start, end)

    async def _retrying(self, ex: Exchange, rt: RouteRuntime, headers: HeaderList,
                        policy: RetryPolicy) -> Reply:
        body = ex.body
        if isinstance(body, RequestBody):
            try:
                body = await replayable(body, ex.headers, rt.max_buffered_body)
            except RequestRejected as exc:
                return problem(exc.status, exc.detail, ex.request_id, close=True)
        rt.budget.request_started()
        try:
            return await self._tries(ex, rt, headers, body, policy)
        finally:
            rt.budget.request_finished()

    async def _tries(self, ex: Exchange, rt: RouteRuntime, headers: HeaderList,
                     body: bytes | AsyncIterable[bytes] | None,
                     policy: RetryPolicy | None) -> Reply:
        clock, upstream, name, pool = self._clock, rt.upstream, rt.route.name, self._pool
        buffer = rt.buffer_response_bytes
        target_path = rt.route.rewrite(ex.path) + ex.query
        # the body can be sent again (bytes or none; tested without the ABC's slow check)
        again = body is None or isinstance(body, bytes | bytearray | memoryview)
        keyed = (policy is not None and rt.idempotency_key
                 and has_idempotency_key(ex.headers))
        start = clock()
        deadline = start + rt.total_timeout
        tried: list[str] = []
        reserved = False  # a retry the budget granted is under way
        try:
            while True:
                now = clock()
                choice = upstream.choose(ex.headers, tried, now, ex.peer)
                if isinstance(choice, Refusal):
                    return _noted(ex, _refusal(ex, choice, name))
                target = choice.target
                tried.append(target.id)
                if ex.note is not None:  # an observed request: the instance it went to
                    ex.note.target = target
                # One try, its pick settled exactly once however it ends. A response of
                # at most ``buffer`` bytes (by Content-Length) counts as arrived only once
                # its whole body has (nginx's proxy_buffering): a body cut by the upstream
                # then fails this try before anything went to the client, and the retry
                # rules apply to it as to any reset.
                timeout = min(rt.timeout, deadline - now)
                resp: UpstreamResponse | None = None
                exc: Exception | None = None
                try:
                    resp = await pool.request(
                        method=ex.method, host=target.host, port=target.port, target=target_path,
                        headers=headers, body=body, timeout=timeout)
                    if not resp.complete and buffer and bufferable(resp, ex.method, buffer):
                        await wait_body(resp, timeout - (clock() - now))
                except Exception as error:
                    resp, exc = None, error
                    self._settle_failure(upstream, choice, error, now)
                except BaseException:  # cancelled (client gone, shutdown): free the breaker slot
                    upstream.settle(choice, None, 0.0, clock())
                    raise
                else:
                    end = clock()
                    upstream.settle(choice, resp.status, end - now, end)
                if reserved:
                    rt.budget.retry_finished()
                    reserved = False
                if policy is not None:
                    err = exc if isinstance(exc, UpstreamError) else None
                    status = resp.status if resp is not None and resp.status >= 300 else None
                    if (err or status) and retry_allowed(policy, ex.method, again, status, err,
                                                         keyed=keyed):
                        wait = self._retry_after(resp) if resp is not None else None
                        # never reached an upstream (connect failure ...): no retry budget
                        unsent = err is not None and not err.request_sent
                        delay = self._backoff(rt, policy, len(tried), start, deadline, clock(),
                                              wait, unsent=unsent, failed=target.id)
                        if delay is not None:
                            reserved = not unsent
                            if resp is not None:
                                await resp.aclose()
                            await self._sleep(delay)
                            continue
                if resp is None:
                    assert exc is not None
                    return _noted(ex, self._failure(ex, exc, name))
                return _reply(ex, resp, rt.route)
        finally:
            if reserved:  # cancelled while waiting to retry
                rt.budget.retry_finished()

    def _retry_after(self, resp: UpstreamResponse) -> float | None:
        """The response's ``Retry-After`` in seconds (RFC 9110 §10.2.3), or None."""
        for k, v in resp.headers:
            if len(k) == 11 and k.lower() == b"retry-after":
                return parse_retry_after(v.decode("latin-1"), self._wall())
        return None

    def _backoff(self, rt: RouteRuntime, policy: RetryPolicy, attempts: int, start: float,
                 deadline: float, now: float, retry_after: float | None = None, *,
                 unsent: bool = False, failed: str | None = None) -> float | None:
        """The wait before the next try, or None: attempts spent, no time, no budget, or
        the upstream asked for a longer pause (``Retry-After``) than ``max_retry_after``.

        ``unsent``: the try never reached an upstream (refused connection, connect
        timeout, a pooled connection found closed): retrying it adds no work upstream,
        so it takes nothing from the retry budget (Finagle's "requeues"); attempts and
        the deadline still bound it. ``failed``: the instance the try went to; the
        budget's floor counts it among the instances even once it is deregistered
        (``Upstream.spread``).

        An upstream's ``Retry-After`` replaces the jittered backoff (Envoy's
        ``rate_limited_retry_back_off``); one over the cap is not waited out
        here: the client gets the answer and its ``Retry-After``.
        """
        if retry_after is not None and retry_after > rt.max_retry_after:
            return None
        delay = policy.next_delay(attempts, now - start, retry_after, rng=self._rng)
        if delay is None or now + delay >= deadline:
            return None
        upstream = rt.upstream
        hosts = upstream.size if failed is None else upstream.spread(failed)
        if not unsent and not rt.budget.try_retry(hosts):
            return None
        return delay

    def _failure(self, ex: Exchange, exc: Exception, name: str) -> Reply:
        body = ex.body
        if isinstance(body, RequestBody) and body.error is not None:
            err = body.error  # the client's body failed (too large, too slow)
            return problem(err.status, err.detail, ex.request_id, close=True)
        if isinstance(exc, RequestRejected):
            return problem(exc.status, exc.detail, ex.request_id, close=True)
        if isinstance(exc, UpstreamTimeout):
            return problem(504, f"route {name!r}: the upstream did not answer in time",
                           ex.request_id)
        if isinstance(exc, PoolOverloaded):
            return problem(503, f"route {name!r}: the upstream is overloaded ({exc})",
                           ex.request_id, slug="upstream-overloaded")
        if isinstance(exc, UpstreamError):
            return problem(502, f"route {name!r}: {exc}", ex.request_id)
        raise exc


def _noted(ex: Exchange, reply: Reply) -> Reply:
    """``reply``, a problem the proxy made itself; its error kind goes to the observed
    request's note (the ``kind`` label of ``qanat_gateway_upstream_errors_total``)."""
    note = ex.note
    if note is not None:
        note.error = error_kind(reply.status, reply.body or b"")
    return reply


def _refusal(ex: Exchange, refusal: Refusal, name: str) -> Reply:
    extra = None
    if refusal.reason == "circuit-open":
        extra = [(b"retry-after", b"%d" % max(1, math.ceil(refusal.retry_after)))]
    return problem(503, f"route {name!r}: {refusal.detail}", ex.request_id,
                   slug=refusal.reason, extra_headers=extra)


def _reply(ex: Exchange, resp: UpstreamResponse, route: Route) -> Reply:
    if ex.method == b"HEAD" or resp.status in _NO_BODY_STATUS or resp.status < 200:
        # closed by the server's release; an empty stream keeps the release path uniform
        out = forward_response_headers(resp.headers, ex.request_id, route.response_edit)
        return Reply(resp.status, out, None, release=resp.aclose, reason=resp.reason)
    # Only below 400: the server counts a 4xx/5xx *body* reply as one the gateway
    # wrote itself (qanat_gateway_rejected_total); an upstream's error stays a stream.
    # (isinstance: some unit tests hand in a reduced stand-in for the response.)
    if resp.status < 400 and isinstance(resp, UpstreamResponse):
        body = resp.take_complete(INLINE_BYTES)
        if body is not None:  # it came with the head: no stream, no release, one write
            out = forward_response_headers(resp.headers, ex.request_id, route.response_edit,
                                           whole=True)
            return Reply(resp.status, out, body, reason=resp.reason)
    out = forward_response_headers(resp.headers, ex.request_id, route.response_edit)
    return Reply(resp.status, out, stream=resp.iter_chunks(), release=resp.aclose,
                 reason=resp.reason)


__all__ = ["Proxy", "RouteRuntime", "RouteState", "replayable", "snapshot"]  # re-exported
