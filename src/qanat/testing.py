"""Public test helpers for qanat users and qanat's own tests."""

from __future__ import annotations


class FakeClock:
    """A clock that only moves when told to.

    Pass it wherever qanat takes a ``clock`` (a zero-argument callable that
    returns seconds): ``CircuitBreaker(clock=clock)``. Tests call
    ``clock.advance(seconds)`` instead of sleeping.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        """Jump to ``now``; it must not be earlier than the current time."""
        if now < self.now:
            raise ValueError(f"a clock cannot go backwards ({now} < {self.now})")
        self.now = now


__all__ = ["FakeClock"]
