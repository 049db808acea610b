"""A rate limit shared by every gateway process: GCRA evaluated atomically inside Redis.

One ``EVALSHA`` per check (one round trip): the Lua script reads the key's
theoretical arrival time (TAT), decides, and writes the new TAT with an
expiry, all atomically, at *Redis's* clock (``TIME`` inside the script), so
gateways whose clocks disagree still share one limit. The algorithm is the
same GCRA as ``qanat.core.ratelimit_bucket.GCRA`` (ITU-T I.371; Brandur
Leach, "Rate Limiting, Cells, and GCRA"), so answers keep the ``Decision``
shape: ``allowed, remaining, limit, reset_after, retry_after``. When Redis
has flushed its script cache, ``NOSCRIPT`` is answered by one ``EVAL``.

When Redis is down or slow (no answer within ``timeout``, default 50 ms), the
limiter falls back to a local in-process GCRA of the same rate and burst, as
go-zero's ``TokenLimiter`` does, and says so in ``stats()``. While local, the
first check after every ``probe_interval`` (default 1 s) tries Redis again
(bounded by the same timeout); the first success switches back. During a
fallback each process enforces the limit on its own, so N gateways together
admit up to N times it: pass a smaller ``fallback`` limiter to share it out.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from qanat.core.ratelimit_base import Decision, check_n, check_positive
from qanat.core.ratelimit_bucket import GCRA
from qanat.errors import ConfigError

# Times are integer-valued microseconds as Lua doubles (exact below 2^53, i.e. for
# ~285 years of Unix time); the TAT is stored with %.17g so no precision is lost. The
# 0.001 us slack absorbs rounding in sums of intervals (ten 0.1 s steps exceed 1.0 s).
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + n * interval
local limit = now + tau
if new_tat > limit + 0.001 then
  return {0, math.floor((limit - tat) / interval + 1e-6), math.ceil(tat - now),
          math.ceil(new_tat - limit)}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX',
           math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, math.floor((limit - new_tat) / interval + 1e-6), math.ceil(new_tat - now), 0}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
Mode = Literal["redis", "local"]
_FAILURES = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RedisLimiterStats:
    """Where decisions come from: ``mode`` now, counts since start, the last Redis error."""

    mode: Mode
    redis_checks: int
    local_checks: int
    errors: int
    fallbacks: int  # switches from Redis to local
    recoveries: int  # switches back
    script_loads: int  # NOSCRIPT answered with EVAL
    last_error: str | None


class Fallback:
    """When to use Redis: a pure state machine over ``now`` (monotonic seconds).

    ``redis`` until a failure; then ``local``, with a probe allowed once
    ``probe_interval`` has passed since the last failure; a success returns
    to ``redis``.
    """

    __slots__ = ("mode", "next_probe", "probe_interval")

    def __init__(self, probe_interval: float) -> None:
        self.probe_interval = probe_interval
        self.mode: Mode = "redis"
        self.next_probe = 0.0

    def use_redis(self, now: float) -> bool:
        """Whether this check should go to Redis (always in redis mode; a due probe in local)."""
        return self.mode == "redis" or now >= self.next_probe

    def failed(self, now: float) -> bool:
        """Record a failure; True when this switched the mode to local."""
        switched = self.mode == "redis"
        self.mode, self.next_probe = "local", now + self.probe_interval
        return switched

    def succeeded(self) -> bool:
        """Record a success; True when this switched the mode back to redis."""
        switched = self.mode == "local"
        self.mode = "redis"
        return switched


class RedisRateLimiter:
    """``rate`` permits per second with bursts of ``burst``, per key, across processes.

    ``await allow(key, n=1) -> Decision``. ``key`` is the whole partition
    (``route_key`` builds one from a route and a client attribute); it is
    stored under ``prefix + ":" + key``. ``clock`` (monotonic seconds) drives
    only the local fallback and the probe schedule.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        rate: float,
        burst: int,
        prefix: str = "qanat:rl",
        timeout: float = 0.05,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        fallback: GCRA | None = None,
    ) -> None:
        check_positive(rate, "rate", "RedisRateLimiter.rate")
        check_positive(burst, "burst", "RedisRateLimiter.burst")
        check_positive(timeout, "timeout", "RedisRateLimiter.timeout")
        check_positive(probe_interval, "probe_interval", "RedisRateLimiter.probe_interval")
        self._redis = client
        self.rate, self.burst = float(rate), int(burst)
        self.prefix = prefix
        interval = 1e6 / self.rate  # microseconds per permit
        self._args = (repr(interval), repr(interval * self.burst))
        self._timeout = timeout
        self._clock = clock
        self.local = fallback or GCRA(rate, burst)
        self._state = Fallback(probe_interval)
        self._probing = False
        self._counts = dict.fromkeys(("redis", "local", "errors", "fallbacks", "recov", "loads"), 0)
        self._last_error: str | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        """A limiter on a new client for ``url`` (``redis://host:port/db``), no client retries."""
        timeout = kwargs.get("timeout", 0.05)
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None
        )
        return cls(client, **kwargs)

    async def allow(self, key: str, n: int = 1) -> Decision:
        """Take ``n`` permits for ``key`` if its shared limit has them (see the class docs)."""
        if n != 1:
            check_n(n, self.burst)
        state = self._state
        if state.use_redis(self._clock()) and not self._probing:
            probing = self._probing = state.mode == "local"
            try:
                async with asyncio.timeout(self._timeout):
                    reply = await self._eval(f"{self.prefix}:{key}", n)
            except _FAILURES as exc:
                self._counts["errors"] += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._counts["fallbacks"] += state.failed(self._clock())
            else:
                self._counts["recov"] += state.succeeded()
                self._counts["redis"] += 1
                ok, remaining, reset_us, retry_us = (int(x) for x in reply)
                return Decision(
                    bool(ok), max(remaining, 0), self.burst, reset_us / 1e6, retry_us / 1e6
                )
            finally:
                if probing:
                    self._probing = False
        self._counts["local"] += 1
        return self.local.allow(key, self._clock(), n)

    async def _eval(self, key: str, n: int) -> Sequence[Any]:
        try:
            reply: Sequence[Any] = await self._redis.evalsha(SCRIPT_SHA, 1, key, *self._args, n)
        except NoScriptError:  # Redis restarted or SCRIPT FLUSH: EVAL also caches it again
            self._counts["loads"] += 1
            reply = await self._redis.eval(SCRIPT, 1, key, *self._args, n)
        return reply

    def stats(self) -> RedisLimiterStats:
        """A snapshot for metrics and the dashboard."""
        c = self._counts
        return RedisLimiterStats(
            self._state.mode,
            c["redis"],
            c["local"],
            c["errors"],
            c["fallbacks"],
            c["recov"],
            c["loads"],
            self._last_error,
        )

    async def aclose(self) -> None:
        """Close the Redis client's connections."""
        await self._redis.aclose()


_BY = ("route", "remote_addr", "consumer", "subject")


def route_key(route: str, by: str, value: str | None) -> str | None:
    """The partition key for ``route`` and a client attribute, or None when it is unknown.

    ``by``: ``route`` (one limit for everyone), ``remote_addr``, ``consumer``
    (API-key consumer), ``subject`` (JWT ``sub``) or ``header:<name>``;
    ``value`` is that attribute's value for this request. Long values are
    hashed so keys stay short.
    """
    if by not in _BY and not (by.startswith("header:") and len(by) > 7):
        raise ConfigError(
            f"unknown key {by!r}; use one of {', '.join(_BY)}, header:<name>",
            source="rate_limit.key",
        )
    if by == "route":
        return route
    if value is None or value == "":
        return None
    if len(value) > 64:
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return f"{route}:{by}:{value}"


__all__ = ["SCRIPT", "Fallback", "RedisLimiterStats", "RedisRateLimiter", "route_key"]
