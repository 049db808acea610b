"""The bulkhead's counting core: limits, hand-over, abandonment and statistics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.core.bulkhead import Admission, BulkheadCore
from qanat.errors import ConfigError


def test_runs_queues_then_rejects() -> None:
    """Up to max_concurrent run, up to max_queue wait, the rest are rejected."""
    core = BulkheadCore(2, 1)
    got = [core.arrive() for _ in range(4)]
    assert got == [Admission.RUN, Admission.RUN, Admission.QUEUE, Admission.REJECT]
    s = core.stats()
    assert (s.in_flight, s.queued, s.admitted, s.rejected) == (2, 1, 2, 1)


def test_release_hands_the_slot_to_a_waiter() -> None:
    """Releasing with someone queued passes the slot on; in-flight stays at the limit."""
    core = BulkheadCore(1, 2)
    core.arrive()
    core.arrive()
    assert core.release() is True
    assert (core.in_flight, core.queued) == (1, 0)
    assert core.release() is False
    assert (core.in_flight, core.queued) == (0, 0)


def test_newcomer_never_overtakes_a_waiter() -> None:
    """While anyone is queued, a new arrival queues too even if a slot looks free."""
    core = BulkheadCore(1, 5)
    core.arrive()
    assert core.arrive() is Admission.QUEUE
    core.abandon(timed_out=False)  # the waiter leaves; the runner still runs
    assert core.arrive() is Admission.QUEUE  # still full: one running
    assert core.release() is True
    assert core.arrive() is Admission.QUEUE


def test_abandon_counts_timeouts_and_cancellations() -> None:
    """Leaving the queue frees queue room and is counted by reason."""
    core = BulkheadCore(1, 2)
    for _ in range(3):
        core.arrive()
    core.abandon(timed_out=True)
    core.abandon(timed_out=False)
    s = core.stats()
    assert (s.queued, s.timed_out, s.cancelled) == (0, 1, 1)
    assert core.arrive() is Admission.QUEUE


def test_unmatched_release_and_abandon_are_errors() -> None:
    """Releasing or abandoning more than was taken is a programming error."""
    core = BulkheadCore(1)
    with pytest.raises(RuntimeError):
        core.release()
    with pytest.raises(RuntimeError):
        core.abandon(timed_out=False)


@pytest.mark.parametrize(
    ("args", "source"), [((0, 0), "Bulkhead.max_concurrent"), ((1, -1), "Bulkhead.max_queue")]
)
def test_bad_limits_are_config_errors(args: tuple[int, int], source: str) -> None:
    """Limits below their minimum raise ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        BulkheadCore(*args)
    assert info.value.source == source


@given(
    max_concurrent=st.integers(1, 5),
    max_queue=st.integers(0, 5),
    ops=st.lists(st.sampled_from(["arrive", "release", "timeout", "cancel"]), max_size=200),
)
def test_counts_never_exceed_limits(max_concurrent: int, max_queue: int, ops: list[str]) -> None:
    """Under any sequence of events, in-flight ≤ max_concurrent and queued ≤ max_queue."""
    core = BulkheadCore(max_concurrent, max_queue)
    for op in ops:
        if op == "arrive":
            core.arrive()
        elif op == "release" and core.in_flight:
            core.release()
        elif op in ("timeout", "cancel") and core.queued:
            core.abandon(timed_out=op == "timeout")
        s = core.stats()
        assert 0 <= s.in_flight <= max_concurrent
        assert 0 <= s.queued <= max_queue
        assert s.queued == 0 or s.in_flight == max_concurrent  # nobody waits beside a free slot
