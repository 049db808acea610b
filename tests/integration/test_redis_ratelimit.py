"""The shared rate limit against the real Redis (``redis_url``: 127.0.0.1:6379 by default).

Two OS processes sharing one Redis never admit more than the global limit;
a Redis that refuses connections or stops answering hands the decision to
the local limiter, which still holds the limit, until a probe finds Redis back.
If Redis cannot be reached the tests fail under CI (``CI`` set) and are
skipped elsewhere (the ``redis_url`` fixture, ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from tests.servers import StreamServer, relay

from qanat.backends.redis_ratelimit import RedisRateLimiter
from qanat.testing import FakeClock, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def redis_time(url: str) -> float:
    seconds, micros = redis.Redis.from_url(url).time()
    return seconds + micros / 1e6


async def test_burst_then_refusal_with_exact_shape(redis_url: str, redis_prefix: str) -> None:
    """A fresh key admits ``burst`` at once, then refuses with a Decision like the local GCRA's."""
    limiter = RedisRateLimiter.from_url(
        redis_url, rate=8, burst=4, prefix=redis_prefix, timeout=1.0
    )
    try:
        decisions = [await limiter.allow("k") for _ in range(5)]
    finally:
        await limiter.aclose()
    assert [d.allowed for d in decisions] == [True] * 4 + [False]
    assert [d.remaining for d in decisions[:4]] == [3, 2, 1, 0]
    refused = decisions[4]
    assert 0 < refused.retry_after <= 1 / 8 and refused.limit == 4
    assert 0.5 - 0.05 < refused.reset_after <= 0.5
    assert limiter.stats().mode == "redis" and limiter.stats().local_checks == 0


async def test_local_clocks_do_not_matter(redis_url: str, redis_prefix: str) -> None:
    """Gateways whose clocks are a day apart still share one limit: Redis's clock decides."""
    a, b = (
        RedisRateLimiter.from_url(redis_url, rate=1, burst=3, prefix=redis_prefix, clock=clock)
        for clock in (FakeClock(0), FakeClock(86400))
    )
    try:
        results = [await (a if i % 2 else b).allow("shared") for i in range(6)]
    finally:
        await a.aclose()
        await b.aclose()
    assert sum(d.allowed for d in results) == 3


async def test_noscript_is_answered_with_eval(redis_url: str, redis_prefix: str) -> None:
    """After SCRIPT FLUSH the next check still succeeds (one EVAL), and counts the reload."""
    limiter = RedisRateLimiter.from_url(
        redis_url, rate=100, burst=10, prefix=redis_prefix, timeout=1.0
    )
    try:
        await limiter.allow("k")
        await limiter._redis.script_flush()
        assert (await limiter.allow("k")).allowed
        assert (await limiter.allow("k")).remaining == 7
    finally:
        await limiter.aclose()
    assert limiter.stats().script_loads >= 1 and limiter.stats().errors == 0


CHILD = """
import asyncio, json, sys, time
import redis
from qanat.backends.redis_ratelimit import RedisRateLimiter
url, prefix, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
sync = redis.Redis.from_url(url)
sync.rpush(prefix + ":ready", 1)
sync.blpop([prefix + ":go"], timeout=30)
async def main():
    limiter = RedisRateLimiter.from_url(url, rate=50, burst=10, prefix=prefix, timeout=1.0)
    admitted = refused = 0
    end = time.monotonic() + duration
    while time.monotonic() < end and admitted + refused < 200_000:
        d = await limiter.allow("global")
        admitted += d.allowed
        refused += not d.allowed
    print(json.dumps({"admitted": admitted, "refused": refused, "stats": limiter.stats().mode}))
    await limiter.aclose()
asyncio.run(main())
"""


def test_two_processes_never_exceed_the_global_limit(redis_url: str, redis_prefix: str) -> None:
    """Two gateway processes together admit at most burst + rate × elapsed (Redis time)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, redis_prefix, "1.5"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    client = redis.Redis.from_url(redis_url)
    try:
        for _ in procs:  # wait until both are connected and waiting, then start them together
            assert client.blpop([f"{redis_prefix}:ready"], timeout=30) is not None
        start = redis_time(redis_url)
        client.rpush(f"{redis_prefix}:go", 1, 1)
        outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
        elapsed = redis_time(redis_url) - start
    finally:
        for p in procs:
            p.kill()
        client.close()
    admitted = sum(o["admitted"] for o in outs)
    bound = 10 + 50 * elapsed
    assert admitted <= bound, (admitted, bound, outs)
    assert all(o["admitted"] > 0 and o["refused"] > 0 for o in outs), outs  # both contended
    assert all(o["stats"] == "redis" for o in outs)
    assert admitted >= 10 + 50 * 1.5 * 0.8  # and the limit was really the one in force


async def test_fallback_on_refused_connection_holds_the_limit_locally() -> None:
    """With nothing listening, decisions come from the local GCRA, which still limits."""
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0", rate=4, burst=4, clock=clock, probe_interval=5.0
    )
    try:
        decisions = [await limiter.allow("k") for _ in range(6)]
        stats = limiter.stats()
        assert [d.allowed for d in decisions] == [True] * 4 + [False] * 2
        assert (stats.mode, stats.fallbacks, stats.errors, stats.local_checks) == ("local", 1, 1, 6)
        assert stats.last_error is not None and "ConnectionError" in stats.last_error
        clock.advance(0.25)  # one emission interval: exactly one more permit, locally
        assert (await limiter.allow("k")).allowed and not (await limiter.allow("k")).allowed
        assert limiter.stats().errors == 1  # no probe before probe_interval
        clock.advance(5.0)
        await limiter.allow("k")
        assert limiter.stats().errors == 2  # the probe tried Redis once, and failed
    finally:
        await limiter.aclose()


class Proxy:
    """A TCP proxy to Redis that can stop answering (accepts, never forwards)."""

    def __init__(self, redis_url: str) -> None:
        target = urlsplit(redis_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.forward = True
        self.server = StreamServer(self._client)

    async def start(self) -> int:
        await self.server.start()
        return self.server.port

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.forward:
            await reader.read()  # swallow until the client gives up and closes
            return
        await relay(reader, writer, *await asyncio.open_connection(*self.target))

    async def close(self) -> None:
        """Stop listening and end every connection (the StreamServer awaits the handlers)."""
        await self.server.aclose()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    p = Proxy(redis_url)
    await p.start()
    yield p
    await p.close()


async def test_slow_redis_falls_back_then_recovers(proxy: Proxy, redis_prefix: str) -> None:
    """A Redis that stops answering costs one timeout, then local answers until a probe."""
    port = proxy.server.port
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{port}/0",
        rate=10,
        burst=5,
        prefix=redis_prefix,
        clock=clock,
        timeout=0.05,
        probe_interval=1.0,
    )
    try:
        proxy.forward = False
        assert (await limiter.allow("k")).allowed  # timed out, answered locally
        stats = limiter.stats()
        assert (stats.mode, stats.fallbacks) == ("local", 1)
        assert stats.last_error is not None and "Timeout" in stats.last_error
        proxy.forward = True
        assert (await limiter.allow("k")).allowed
        assert limiter.stats().mode == "local"  # no probe yet: the clock has not moved
        clock.advance(1.0)
        assert (await limiter.allow("k")).allowed
        stats = limiter.stats()
        assert (stats.mode, stats.recoveries, stats.redis_checks) == ("redis", 1, 1)
    finally:
        await limiter.aclose()
