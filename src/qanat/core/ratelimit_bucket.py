"""Token bucket and GCRA: ``rate`` permits per second with bursts of up to ``burst``.

Both admit at most ``rate × t + burst`` permits in any interval of ``t``
seconds and give the same answers; they differ in what they store. The token
bucket (Envoy's local rate limit, go-zero's ``TokenLimiter``) keeps the tokens
left and when it last refilled; GCRA (the ATM Forum's Generic Cell Rate
Algorithm, ITU-T I.371; for HTTP see Brandur Leach, "Rate Limiting, Cells, and
GCRA", 2015) keeps one float per key, the theoretical arrival time (TAT).

Both decide in the time domain (``now >= ready``), with the same float
expression whether the answer is yes or no, so ``retry_after`` is exact: a
request made at ``now + retry_after`` is allowed (see ``settle``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from qanat.core.ratelimit_base import (
    DEFAULT_MAX_KEYS,
    Decision,
    KeyedState,
    check_n,
    check_positive,
    new,
    settle,
)


class TokenBucket(KeyedState[list[float]]):
    """A bucket of ``burst`` tokens per key, refilled at ``rate`` tokens per second.

    A request for ``n`` permits takes ``n`` tokens or, if there are not
    enough, is refused without taking any. A new key starts full.
    """

    __slots__ = ("burst", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        check_positive(rate, "rate", "TokenBucket.rate")
        check_positive(burst, "burst", "TokenBucket.burst")
        super().__init__(max_keys)
        self.rate = float(rate)
        self.burst = int(burst)

    def _idle(self, key: Hashable, now: float) -> bool:
        tokens, last = self._keys[key]
        return now >= last + (self.burst - tokens) / self.rate

    def allow(self, key: Hashable, now: float, n: int = 1) -> Decision:
        """Take ``n`` tokens from ``key``'s bucket at time ``now`` if it has them."""
        burst = self.burst
        if n != 1 and (n < 1 or n > burst):
            check_n(n, burst)
        keys = self._keys
        state = keys.get(key)
        if state is None:
            if keys:
                self._make_room(now)
            left = burst - n
            keys[key] = [float(left), now]
            return new(Decision, (True, left, burst, n / self.rate, 0.0))
        keys.move_to_end(key)
        tokens, last = state
        rate = self.rate
        if tokens < n:
            ready = last + (n - tokens) / rate
            if now < ready:
                have = tokens + (now - last) * rate
                return new(
                    Decision, (False, int(have), burst, (burst - have) / rate, settle(now, ready))
                )
        if now > last:
            tokens += (now - last) * rate
            if tokens > burst:
                tokens = float(burst)  # a float, as mypyc keeps ``tokens`` unboxed
            state[1] = now
        tokens -= n
        state[0] = tokens
        return new(
            Decision,
            (True, math.floor(tokens) if tokens > 0 else 0, burst, (burst - tokens) / rate, 0.0),
        )


class GCRA(KeyedState[float]):
    """The Generic Cell Rate Algorithm: one float per key, the theoretical arrival time.

    With emission interval ``T = 1/rate`` and tolerance ``tau = burst × T``, a
    request for ``n`` permits is allowed when ``max(tat, now) + n×T <= now + tau``;
    then ``tat`` becomes ``max(tat, now) + n×T``.
    """

    __slots__ = ("_interval", "_tau", "burst", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        check_positive(rate, "rate", "GCRA.rate")
        check_positive(burst, "burst", "GCRA.burst")
        super().__init__(max_keys)
        self.rate = float(rate)
        self.burst = int(burst)
        self._interval = 1.0 / self.rate
        self._tau = self.burst * self._interval

    def _idle(self, key: Hashable, now: float) -> bool:
        return now >= self._keys[key]

    def allow(self, key: Hashable, now: float, n: int = 1) -> Decision:
        """Admit ``n`` permits for ``key`` at ``now`` if its TAT leaves room."""
        if n != 1 and (n < 1 or n > self.burst):
            check_n(n, self.burst)
        keys = self._keys
        tat = keys.get(key)
        if tat is None:
            if keys:
                self._make_room(now)
            tat = now
        else:
            keys.move_to_end(key)
            if tat < now:
                tat = now
        interval = self._interval
        new_tat = tat + n * interval
        limit = now + self._tau
        # The slack absorbs float error from summing ``interval`` steps: without it
        # GCRA(10, 20) admitted 19 at one instant, since 20 * 0.1 overshoots 2.0.
        if new_tat > limit + 1e-9 * (limit if limit > 1.0 else 1.0):
            tau = self._tau
            wait = new_tat - tau - now
            while (now + wait) + tau < new_tat:  # compensate the roundings, as in ``settle``
                wait += math.ulp(new_tat)
            remaining = int((limit - tat) / interval + 1e-9)
            return new(Decision, (False, max(remaining, 0), self.burst, tat - now, wait))
        keys[key] = new_tat
        return new(
            Decision,
            (True, int((limit - new_tat) / interval + 1e-9), self.burst, new_tat - now, 0.0),
        )


__all__ = ["GCRA", "TokenBucket"]
