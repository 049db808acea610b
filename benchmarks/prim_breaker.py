"""Circuit breaker and adaptive throttle against pybreaker and the ``circuitbreaker`` package.

Run alone: ``.venv/bin/python benchmarks/prim_breaker.py`` (or all primitives with
``.venv/bin/python benchmarks/primitives.py``). Each case wraps the same trivial
function; ours is ``CircuitBreaker.call`` with default settings. The ``call()``
cases compare against the circuitbreaker package's decorator (its ``call`` does not
check the state); the ``@breaker`` cases compare decorator with decorator. Refusals
are caught with a bare try/except, the cheapest catch, on both sides.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import circuitbreaker
import pybreaker

sys.path.insert(0, str(Path(__file__).parent))

from harness import Case, markdown_table, measure
from qanat.core.breaker import BreakerSettings, CircuitBreaker
from qanat.core.throttle import AdaptiveThrottle


def _work() -> int:
    return 1


def _boom() -> int:
    raise ValueError("down")


def _swallow(fn: Callable[[], object]) -> Callable[[], None]:
    """A call whose exception is caught, so refusals can be timed like successes.

    A plain try/except: ``contextlib.suppress`` costs about as much as a whole
    refusal, the same on both sides, and so hides the difference being measured.
    """

    def run() -> None:
        try:  # noqa: SIM105 -- suppress() is the overhead this avoids
            fn()
        except Exception:
            pass

    return run


def _open_breakers() -> tuple[CircuitBreaker, pybreaker.CircuitBreaker, object]:
    ours = CircuitBreaker(BreakerSettings(ready_to_trip=lambda counts: True, timeout=1e9))
    theirs = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=1e9)
    other = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=10**9)
    _swallow(lambda: ours.call(_boom))()
    _swallow(lambda: theirs.call(_boom))()
    wrapped_boom = other(_boom)
    _swallow(wrapped_boom)()
    assert ours.state == "open" and theirs.current_state == "open" and other.opened
    return ours, theirs, other


def cases() -> list[Case]:
    pyb = f"pybreaker {version('pybreaker')}"
    cbk = f"circuitbreaker {version('circuitbreaker')}"

    closed = CircuitBreaker()
    pb_closed = pybreaker.CircuitBreaker()
    cb_closed = circuitbreaker.CircuitBreaker()(_work)
    interval = CircuitBreaker(BreakerSettings(interval=60.0))
    rolling = CircuitBreaker(BreakerSettings(interval=60.0, bucket_period=1.0))
    ours_open, pb_open, cb_open = _open_breakers()
    cb_open_work = cb_open(_work)  # type: ignore[operator]
    ours_deco, pb_deco = closed(_work), pb_closed(_work)
    ours_open_deco, pb_open_deco = ours_open(_work), pb_open(_work)

    throttle = AdaptiveThrottle()
    clock = throttle._clock

    def throttle_allow_record() -> None:
        now = clock()
        if throttle.allow(now):
            throttle.record(True, now)

    return [
        Case("breaker", "call() success, closed", lambda: closed.call(_work),
             pyb, lambda: pb_closed.call(_work)),
        Case("breaker", "call() success, closed", lambda: closed.call(_work),
             cbk, cb_closed),
        Case("breaker", "call() success, closed, interval 60 s", lambda: interval.call(_work),
             pyb, lambda: pb_closed.call(_work)),
        Case("breaker", "call() success, closed, rolling 60 x 1 s",
             lambda: rolling.call(_work), pyb, lambda: pb_closed.call(_work)),
        Case("breaker", "call() refused, open (fast fail)",
             _swallow(lambda: ours_open.call(_work)), pyb,
             _swallow(lambda: pb_open.call(_work))),
        Case("breaker", "call() refused, open (fast fail)",
             _swallow(lambda: ours_open.call(_work)), cbk, _swallow(cb_open_work)),
        Case("breaker", "@breaker success, closed", ours_deco, pyb, pb_deco),
        Case("breaker", "@breaker success, closed", ours_deco, cbk, cb_closed),
        Case("breaker", "@breaker refused, open", _swallow(ours_open_deco), pyb,
             _swallow(pb_open_deco)),
        Case("breaker", "@breaker refused, open", _swallow(ours_open_deco), cbk,
             _swallow(cb_open_work)),
        Case("throttle", "allow(now) + record(True, now), healthy", throttle_allow_record),
    ]


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    results = [measure(c if not quick else Case(**{**c.__dict__, "number": 200}),
                       repeat=2 if quick else 7) for c in cases()]
    print(markdown_table(results))
