"""The bulkhead's bookkeeping: how many calls run, how many wait, who is turned away.

Pure counting, no waiting: ``qanat.runtime.bulkhead.Bulkhead`` owns the queue
of waiters and asks this core what to do. The shape follows Envoy's circuit
breaking thresholds (``max_requests`` running, ``max_pending_requests``
queued, overflow answered at once) and Resilience4j's semaphore bulkhead.

Hand-over keeps the queue FIFO: when a running call releases its slot and
someone is queued, the slot passes straight to the head of the queue, so a
newcomer can never overtake a waiter (``arrive`` queues whenever anyone is
already queued).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qanat.errors import ConfigError


class Admission(Enum):
    """What ``BulkheadCore.arrive`` decided for a new call."""

    RUN = "run"  # a slot was taken: run now
    QUEUE = "queue"  # wait in line for a hand-over
    REJECT = "reject"  # the queue is full: fail at once


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    """A snapshot for metrics and the dashboard."""

    max_concurrent: int
    max_queue: int
    in_flight: int
    queued: int
    admitted: int  # calls that got a slot, directly or after waiting
    rejected: int  # turned away because the queue was full
    timed_out: int  # left the queue after waiting max_wait
    cancelled: int  # left the queue because the waiter was cancelled


class BulkheadCore:
    """Counts in-flight and queued calls against ``max_concurrent`` and ``max_queue``."""

    __slots__ = (
        "_admitted",
        "_cancelled",
        "_in_flight",
        "_queued",
        "_rejected",
        "_timed_out",
        "max_concurrent",
        "max_queue",
    )

    def __init__(self, max_concurrent: int, max_queue: int = 0) -> None:
        for name, value, low in (
            ("max_concurrent", max_concurrent, 1),
            ("max_queue", max_queue, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"must be an integer >= {low}, got {value!r}", source=f"Bulkhead.{name}"
                )
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._in_flight = self._queued = 0
        self._admitted = self._rejected = self._timed_out = self._cancelled = 0

    def arrive(self) -> Admission:
        """A call arrives: run it, queue it or reject it."""
        if self._in_flight < self.max_concurrent and not self._queued:
            self._in_flight += 1
            self._admitted += 1
            return Admission.RUN
        if self._queued < self.max_queue:
            self._queued += 1
            return Admission.QUEUE
        self._rejected += 1
        return Admission.REJECT

    def release(self) -> bool:
        """A running call finished. True: its slot passed to the head of the queue.

        The caller must then wake that waiter (which now counts as in flight) or,
        if it is gone, call ``release`` again on its behalf.
        """
        if self._in_flight <= 0:
            raise RuntimeError("Bulkhead.release() without a matching admission")
        if self._queued:
            self._queued -= 1
            self._admitted += 1
            return True
        self._in_flight -= 1
        return False

    def abandon(self, *, timed_out: bool) -> None:
        """A queued call left the queue without a slot (timed out or cancelled)."""
        if self._queued <= 0:
            raise RuntimeError("Bulkhead.abandon() without a queued call")
        self._queued -= 1
        if timed_out:
            self._timed_out += 1
        else:
            self._cancelled += 1

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        return self._queued

    def stats(self) -> BulkheadStats:
        """The limits, the current counts and the totals so far."""
        return BulkheadStats(
            self.max_concurrent,
            self.max_queue,
            self._in_flight,
            self._queued,
            self._admitted,
            self._rejected,
            self._timed_out,
            self._cancelled,
        )


__all__ = ["Admission", "BulkheadCore", "BulkheadStats"]
