"""Rate limits: our limiters' ``allow`` against the ``limits`` library's in-memory strategies.

Run alone: ``.venv/bin/python benchmarks/prim_ratelimit.py``; with the others:
``.venv/bin/python benchmarks/primitives.py``. Each pair limits one client to
the same rate; both sides read ``time.monotonic``/``time.time`` per call as a
gateway would. Pairs: token bucket vs fixed window (both O(1) counters),
GCRA vs moving window (both exact), sliding window counter vs limits' sliding
window counter (the same approximation). Two regimes: a generous limit
(almost every call allowed, the common case) and a tight one (most refused).
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import version
from pathlib import Path

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

sys.path.insert(0, str(Path(__file__).parent))

from harness import Case, markdown_table, measure
from qanat.core.ratelimit import GCRA, SlidingWindow, TokenBucket

PEER = f"limits {version('limits')}"


def _pair(name: str, ours: object, strategy: type, per_second: int, regime: str) -> Case:
    item = RateLimitItemPerSecond(per_second, 1)
    theirs = strategy(MemoryStorage())
    clock = time.monotonic
    allow = ours.allow  # type: ignore[attr-defined]

    def run_ours() -> bool:
        return allow("client-42", clock()).allowed  # type: ignore[no-any-return]

    def run_theirs() -> bool:
        return theirs.hit(item, "client-42")  # type: ignore[no-any-return]

    peer = f"{PEER} {strategy.__name__.removesuffix('RateLimiter')}"
    return Case("rate limit", f"{name} allow(), {regime}", run_ours, peer, run_theirs)


def cases() -> list[Case]:
    out = []
    for per_second, regime in ((10_000_000, "mostly allowed"), (100, "mostly refused")):
        out += [
            _pair(
                "token bucket",
                TokenBucket(per_second, per_second),
                FixedWindowRateLimiter,
                per_second,
                regime,
            ),
            _pair(
                "GCRA", GCRA(per_second, per_second), MovingWindowRateLimiter, per_second, regime
            ),
            _pair(
                "sliding window",
                SlidingWindow(per_second, 1.0),
                SlidingWindowCounterRateLimiter,
                per_second,
                regime,
            ),
        ]
    return out


if __name__ == "__main__":
    print(markdown_table(measure(c) for c in cases()))
