"""The innermost handler: forward an exchange to its route's upstream.

Errors map to problem details (RFC 9457): no endpoint or a full upstream
queue -> 503; connect failure, reset or malformed response -> 502; the
timeout elapsed -> 504. The response body streams back chunk by chunk (the
upstream client pauses its socket while we wait on a slow client), and the
request body streams up the same way (``RequestBody``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from qanat.gateway.body import RequestBody
from qanat.gateway.filters import Exchange, Handler, Reply
from qanat.gateway.hardening import RequestRejected
from qanat.gateway.headers import forward_request_headers, forward_response_headers
from qanat.gateway.problem import problem
from qanat.gateway.routing import Route
from qanat.gateway.upstream import Upstream
from qanat.http import HttpPool, PoolOverloaded, UpstreamError, UpstreamTimeout

_NO_BODY_STATUS = frozenset((204, 304))


@dataclass(eq=False, slots=True)
class RouteRuntime:
    """What the gateway holds per compiled route: the route, its upstream, its handler."""

    route: Route
    upstream: Upstream
    timeout: float  # until the response head, for this (single) try
    handler: Handler


class Proxy:
    """``await proxy(exchange) -> Reply``: the handler at the centre of every filter chain."""

    def __init__(self, pool: HttpPool, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._clock = clock

    async def __call__(self, ex: Exchange) -> Reply:
        rt: RouteRuntime = ex.route
        route = rt.route
        target = rt.upstream.pick()
        if target is None:
            return problem(
                503,
                f"route {route.name!r} has no available endpoint ({rt.upstream.description})",
                ex.request_id,
            )
        headers = forward_request_headers(
            ex.headers,
            ex.connection,
            host=route.host_rewrite or ex.authority,
            peer=ex.peer,
            proto=ex.scheme,
            request_id=ex.request_id,
            forwarded_host=ex.authority,
            edit=route.request_edit,
        )
        path = route.rewrite(ex.path)
        start = self._clock()
        try:
            resp = await self._pool.request(
                method=ex.method,
                host=target.host,
                port=target.port,
                target=path + ex.query,
                headers=headers,
                body=ex.body,
                timeout=rt.timeout,
            )
        except Exception as exc:
            rt.upstream.done(target, False, self._clock() - start, self._clock())
            return self._failure(ex, exc, route.name)
        rt.upstream.done(target, resp.status < 500, self._clock() - start, self._clock())
        out = forward_response_headers(resp.headers, ex.request_id, route.response_edit)
        if ex.method == b"HEAD" or resp.status in _NO_BODY_STATUS or resp.status < 200:
            await resp.aclose()
            return Reply(resp.status, out, None, reason=resp.reason)
        return Reply(
            resp.status, out, stream=resp.iter_chunks(), release=resp.aclose, reason=resp.reason
        )

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


__all__ = ["Proxy", "RouteRuntime"]
