"""The ``rate_limit`` filter: per route and per key, in-process or shared through Redis.

::

    filters:
      - name: rate_limit
        config: {rate: 10, burst: 20, key: consumer}        # GCRA, 10/s, bursts of 20
      - name: rate_limit
        config: {limit: 100, window: 1m, key: remote_addr}   # sliding window (APISIX limit-count)
      - name: rate_limit
        config: {rate: 50, burst: 50, key: route, redis: {url: "redis://127.0.0.1:6379/0"}}

Keys (APISIX's ``key``/``key_type``): ``route`` (one limit for all),
``remote_addr`` (default), ``consumer`` (API-key consumer), ``subject`` (JWT
``sub``) or ``header:<name>``. A request without the attribute (no consumer
yet, no header) is limited by its address instead, as APISIX does.

Algorithms (``qanat.core.ratelimit``, pure, the clock passed in): ``gcra``
(default for ``rate``), ``token_bucket``, and ``sliding_window`` (for
``limit``/``window``). With ``redis:`` the limit is one GCRA kept in Redis
and shared by every gateway process (``RedisRateLimiter``); when Redis is
down or slow it falls back to a local GCRA of the same rate (each process
then enforces it alone) and probes Redis again every ``probe_interval``.

A refusal is 429 with ``Retry-After`` and the IETF ``RateLimit-Policy`` /
``RateLimit`` fields plus ``X-RateLimit-*``; admitted responses carry the
same rate-limit fields (``headers: false`` keeps only ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from qanat.core.ratelimit import GCRA, Decision, KeyedState, SlidingWindow, TokenBucket
from qanat.core.ratelimit_headers import (
    policy_window,
    rate_limit_headers,
    ratelimit_policy,
    x_ratelimit,
)
from qanat.gateway.filter_config import filter_config
from qanat.gateway.filters import Exchange, HookFilter, Reply, add_reply_headers, register_filter
from qanat.gateway.filters_ratelimit_config import RateLimitConfig, RedisConfig
from qanat.gateway.problem import problem


def _key_of(kind: str, header: bytes) -> Callable[[Exchange], tuple[str, bytes] | None]:
    """The request attribute a limit is kept per: ``(kind, value)`` (None: one for all)."""
    if kind == "route":
        return lambda ex: None
    if kind == "remote_addr":
        return lambda ex: ("remote_addr", ex.peer)

    def attribute(ex: Exchange) -> tuple[str, bytes] | None:
        value: bytes | None = None
        if header:
            value = next((v for k, v in ex.headers if k == header), None)
        else:
            ident = ex.state.get("identity") if ex.state else None
            raw = getattr(ident, kind, None) if ident is not None else None
            value = raw.encode() if raw else None
        return (kind, value) if value else ("remote_addr", ex.peer)  # APISIX's fallback

    return attribute


class RateLimitFilter(HookFilter):
    """Admits or refuses each request by its key; ``clock`` drives the local limiters."""

    def __init__(self, config: RateLimitConfig, route: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        c = self.config = config
        self.route = route
        self._clock = clock
        kind = c.key.split(":", 1)[0]
        self._key = _key_of(kind, c.key[7:].lower().encode() if kind == "header" else b"")
        self._policy = c.policy or route
        self._redis: Any = None
        # Read per request, so plain attributes rather than the (pydantic) config's. Once
        # closed, a straggler uses the local limiter, never a new Redis client.
        self._via_redis = c.redis is not None
        self._fields = c.headers  # the rate-limit fields on every reply
        # (limit, RateLimit-Policy value, quoted policy name, X-RateLimit-Limit field)
        self._fixed: tuple[int, bytes, bytes, tuple[bytes, bytes]] | None = None
        self.local: KeyedState[Any]
        if c.limit is not None and c.window is not None:
            self.local = SlidingWindow(c.limit, c.window, max_keys=c.max_keys)
            self._window = max(1, math.ceil(c.window - 1e-9))
        else:
            assert c.rate is not None
            burst = c.burst or max(1, math.ceil(c.rate))
            algo = TokenBucket if c.algorithm == "token_bucket" else GCRA
            self.local = algo(c.rate, burst, max_keys=c.max_keys)
            self._rate_burst = (c.rate, burst)
            self._window = policy_window(c.rate, burst)[1]

    async def decide(self, key: tuple[str, bytes] | None) -> Decision:
        """The limiter's decision for one permit of ``key``."""
        if not self._via_redis:
            return self.local.allow(key, self._clock())
        if self._redis is None:
            self._redis = self._open_redis()
        name = self.route
        if key is not None:
            value = key[1] if len(key[1]) <= 64 else b"sha256:" + hashlib.sha256(key[1]).digest()
            name = f"{self.route}:{key[0]}:{value.decode('latin-1')}"
        d: Decision = await self._redis.allow(name)
        return d

    def _open_redis(self) -> Any:
        # Imported here: Redis is an optional dependency (qanat[redis]). The client is
        # made on first use, inside the event loop that serves the route.
        from qanat.backends.redis_ratelimit import RedisRateLimiter

        r = self.config.redis
        assert r is not None and isinstance(self.local, GCRA)
        rate, burst = self._rate_burst
        return RedisRateLimiter.from_url(
            r.url, rate=rate, burst=burst, prefix=r.prefix, timeout=r.timeout,
            probe_interval=r.probe_interval, clock=self._clock, fallback=self.local,
        )

    def stats(self) -> Any:
        """The Redis limiter's stats (mode, fallbacks ...), or None when in-process."""
        return self._redis.stats() if self._redis is not None else None

    async def aclose(self) -> None:
        """Close the Redis connections, if any were opened (idempotent).

        The gateway calls this when a reload drops the filter; a request still
        running on the old route set then checks the local limiter instead of
        opening a new connection.
        """
        self._via_redis = False
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def headers(self, d: Decision) -> list[tuple[bytes, bytes]]:
        """The rate-limit fields for ``d`` (``core.ratelimit_headers``, byte for byte).

        An admitted request, the hot path, reuses what only changes with the
        limit (the policy field, the quoted name, ``X-RateLimit-Limit``).
        """
        on = self._fields
        if not (on and d.allowed):
            return rate_limit_headers(d, policy=self._policy, window=self._window, ietf=on,
                                      legacy=on)
        fixed = self._fixed
        if fixed is None or fixed[0] != d.limit:
            policy = ratelimit_policy(self._policy, d.limit, self._window)
            fixed = self._fixed = (d.limit, policy, policy.rpartition(b";q=")[0],
                                   x_ratelimit(d)[0])
        remaining = max(0, d.remaining)
        reset = max(0, math.ceil(d.reset_after - 1e-9))  # as core's _ceil: float noise
        return [(b"ratelimit-policy", fixed[1]),
                (b"ratelimit", b"%s;r=%d;t=%d" % (fixed[2], remaining, reset)),
                fixed[3],
                (b"x-ratelimit-remaining", b"%d" % remaining),
                (b"x-ratelimit-reset", b"%d" % reset)]

    def on_request(self, ex: Exchange) -> Reply | Awaitable[Reply | None] | None:
        key = self._key(ex)
        if not self._via_redis:  # in-process: no coroutine for it
            return self._verdict(ex, self.local.allow(key, self._clock()))
        return self._shared(ex, key)

    async def _shared(self, ex: Exchange, key: tuple[str, bytes] | None) -> Reply | None:
        return self._verdict(ex, await self.decide(key))

    def _verdict(self, ex: Exchange, d: Decision) -> Reply | None:
        """The 429 for a refusal; else None, the rate-limit fields to go on the reply."""
        extra = self.headers(d)
        if not d.allowed:
            return problem(429, f"route {self.route!r}: rate limit exceeded; retry after "
                           f"{d.retry_after:.3f}s", ex.request_id, slug="rate-limited",
                           extra_headers=extra)
        add_reply_headers(ex, extra)
        return None


def rate_limit_filter(config: Mapping[str, Any], route: str) -> RateLimitFilter:
    """The ``rate_limit`` filter factory (registered on import)."""
    return RateLimitFilter(filter_config(RateLimitConfig, config), route)


register_filter("rate_limit", rate_limit_filter)

__all__ = ["RateLimitConfig", "RateLimitFilter", "RedisConfig", "rate_limit_filter"]
