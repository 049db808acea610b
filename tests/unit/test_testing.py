"""qanat.testing: FakeClock, and the one way tests wait (``eventually`` and its sync twin).

Every wait here runs on a FakeClock whose ``sleep`` advances it, so the
deadline arithmetic is exact and nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.errors import ConfigError
from qanat.testing import FakeClock, eventually, eventually_sync, free_port


class Sleeps:
    """A ``sleep`` for ``eventually_sync`` that advances a FakeClock and records each pause."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)

    async def coro(self, seconds: float) -> None:
        self(seconds)


def test_fake_clock_moves_only_forward() -> None:
    """advance() and set() move the clock; a step backwards is refused and changes nothing."""
    clock = FakeClock(10.0)
    assert clock.advance(2.5) == 12.5 and clock() == 12.5
    clock.set(20.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(19.0)
    assert clock() == 20.0


def test_sync_returns_the_first_truthy_value_without_pausing_when_already_true() -> None:
    """A condition that holds at once is called once, its value returned, and nothing sleeps."""
    clock = FakeClock()
    sleeps = Sleeps(clock)
    assert eventually_sync(lambda: {"ready": 1}, clock=clock, sleep=sleeps) == {"ready": 1}
    assert sleeps.pauses == []


def test_sync_polls_every_interval_until_the_condition_holds() -> None:
    """The condition is retried every ``interval`` until truthy; its value is returned."""
    clock = FakeClock()
    sleeps = Sleeps(clock)
    answers = iter([0, None, "", "done"])
    got = eventually_sync(lambda: next(answers), interval=0.25, clock=clock, sleep=sleeps)
    assert got == "done" and sleeps.pauses == [0.25] * 3


@given(
    timeout=st.floats(min_value=0.0, max_value=10.0),
    interval=st.floats(min_value=0.01, max_value=10.0),
)
def test_sync_gives_up_exactly_at_the_deadline_after_a_last_attempt(
    timeout: float, interval: float
) -> None:
    """Pauses never run past the deadline, and a last attempt is made at the deadline itself."""
    clock = FakeClock(0.0)
    sleeps = Sleeps(clock)
    attempts: list[float] = []

    def never() -> bool:
        attempts.append(clock())
        return False

    with pytest.raises(AssertionError, match="timed out"):
        eventually_sync(never, timeout=timeout, interval=interval, clock=clock, sleep=sleeps)
    assert all(p <= interval for p in sleeps.pauses)
    assert attempts[0] == 0.0 and attempts[-1] == pytest.approx(timeout)
    assert len(attempts) == len(sleeps.pauses) + 1


def test_sync_sees_a_condition_that_turns_true_during_the_last_interval() -> None:
    """The attempt at the deadline counts: a value that appears then is returned, not a timeout."""
    clock = FakeClock(0.0)
    got = eventually_sync(
        lambda: clock() >= 1.0 and "late", timeout=1.0, interval=0.3, clock=clock,
        sleep=Sleeps(clock),
    )
    assert got == "late"


def test_the_failure_names_what_was_awaited_the_attempts_and_the_last_value() -> None:
    """The AssertionError says what, how long, how many attempts and repr of the last value."""
    clock = FakeClock()
    queue = [3, 2, 1]

    def drained() -> list[int] | None:
        queue.pop()
        return None if queue else queue

    with pytest.raises(AssertionError) as failure:
        eventually_sync(drained, timeout=0.5, interval=0.25, what="the queue to drain",
                        clock=clock, sleep=Sleeps(clock))
    message = str(failure.value)
    assert "timed out after 0.5s waiting for the queue to drain (3 attempts)" in message
    assert message.endswith("the last value was []")


def test_a_callable_what_is_evaluated_only_when_the_wait_fails() -> None:
    """``what`` given as a callable is read at the deadline, so it can carry the latest log."""
    clock = FakeClock()
    log: list[str] = []

    def check() -> bool:
        log.append(f"line {len(log)}")
        return False

    with pytest.raises(AssertionError, match=r"server start; log: line 0 line 1 line 2"):
        eventually_sync(
            check, timeout=0.2, interval=0.1, clock=clock, sleep=Sleeps(clock),
            what=lambda: "server start; log: " + " ".join(log),
        )


def test_ignored_exceptions_mean_not_yet_and_the_last_one_is_reported() -> None:
    """An exception listed in ``ignore`` is retried; at the deadline the message shows it."""
    clock = FakeClock()

    def connect() -> bool:
        raise ConnectionRefusedError(111, f"refused at {clock():g}")

    with pytest.raises(AssertionError) as failure:
        eventually_sync(connect, timeout=0.5, interval=0.25, ignore=(OSError,), clock=clock,
                        sleep=Sleeps(clock))
    assert "raised ConnectionRefusedError: [Errno 111] refused at 1000.5" in str(failure.value)


def test_an_ignored_exception_then_success_returns_the_value() -> None:
    """After ignored failures, the first truthy value ends the wait."""
    clock = FakeClock()
    outcomes = iter([OSError("not yet"), OSError("not yet"), 7])

    def attempt() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert eventually_sync(attempt, ignore=(OSError,), clock=clock, sleep=Sleeps(clock)) == 7


def test_other_exceptions_propagate_at_once() -> None:
    """An exception not in ``ignore`` ends the wait on the first attempt, unchanged."""
    clock = FakeClock()
    sleeps = Sleeps(clock)
    calls = itertools.count(1)

    def broken() -> bool:
        next(calls)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        eventually_sync(broken, ignore=(OSError,), clock=clock, sleep=sleeps)
    assert next(calls) == 2 and sleeps.pauses == []


@pytest.mark.parametrize("arg", ["timeout", "interval"])
@pytest.mark.parametrize("value", [-0.5, float("nan")])
def test_a_negative_or_nan_duration_is_a_config_error(arg: str, value: float) -> None:
    """timeout and interval must be >= 0; the error names the argument and the function."""
    with pytest.raises(ConfigError, match=rf"eventually_sync\({arg}=\.\.\.\): {arg} must be"):
        eventually_sync(lambda: True, **{arg: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"eventually\({arg}=\.\.\.\)"):
        asyncio.run(eventually(lambda: True, **{arg: value}))  # type: ignore[arg-type]


class Status:
    """A falsy answer with a long repr, like a health report that lists many checks."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Status(" + "check=failing, " * 1000 + ")"


def test_a_long_last_value_is_shortened_in_the_message() -> None:
    """A huge last value does not flood the failure: its repr is cut to 300 characters."""
    with pytest.raises(AssertionError) as failure:
        eventually_sync(Status, timeout=0.0)
    last = str(failure.value).split("the last value was ", 1)[1]
    assert len(last) == 300 and last.startswith("Status(check=failing, ") and last.endswith("...")


# -- async ---------------------------------------------------------------------------------


async def test_async_accepts_plain_and_async_conditions() -> None:
    """Both a plain callable and a coroutine function are polled; the value is returned."""
    clock = FakeClock()
    sleeps = Sleeps(clock)
    answers = iter([False, False, 42])

    async def probe() -> int:
        await asyncio.sleep(0)  # a real suspension, as a network check has
        return next(answers)

    assert await eventually(probe, interval=0.5, clock=clock, sleep=sleeps.coro) == 42
    assert sleeps.pauses == [0.5, 0.5]
    assert await eventually(lambda: "plain", clock=clock, sleep=sleeps.coro) == "plain"


async def test_async_sees_what_another_task_does() -> None:
    """With the real loop, a condition set by another task is seen once that task runs."""
    box: list[int] = []
    task = asyncio.get_running_loop().call_soon(box.append, 1)
    assert await eventually(lambda: box, interval=0, what="the callback") == [1]
    task.cancel()


async def test_async_times_out_with_the_same_message_shape() -> None:
    """At the deadline the async flavour raises the same AssertionError as the sync one."""
    clock = FakeClock()
    with pytest.raises(AssertionError) as failure:
        await eventually(lambda: 0, timeout=1.0, interval=0.25, what="a port to open",
                         clock=clock, sleep=Sleeps(clock).coro)
    assert "waiting for a port to open (5 attempts); the last value was 0" in str(failure.value)


async def test_a_hanging_async_attempt_is_cut_at_the_deadline() -> None:
    """An attempt that never returns ends the wait near the deadline, saying it was running."""
    never = asyncio.Event()

    async def hangs() -> bool:
        await never.wait()
        return True

    with pytest.raises(AssertionError, match=r"waiting for an answer \(1 attempt\); the last "
                                             r"attempt was still running"):
        await eventually(hangs, timeout=0.05, what="an answer")


async def test_a_timeout_raised_by_the_condition_itself_is_not_mistaken_for_the_deadline() -> None:
    """A TimeoutError from inside the condition propagates (or is ignored) like any exception."""

    async def own_timeout() -> bool:
        raise TimeoutError("the probe's own timeout")

    with pytest.raises(TimeoutError, match="probe's own"):
        await eventually(own_timeout, timeout=30.0)
    clock = FakeClock()
    with pytest.raises(AssertionError, match="raised TimeoutError: the probe's own timeout"):
        await eventually(own_timeout, timeout=1.0, interval=0.5, ignore=(TimeoutError,),
                         clock=clock, sleep=Sleeps(clock).coro)


async def test_async_ignored_exceptions_are_retried() -> None:
    """An ``ignore``d exception from an async attempt is "not yet", like in the sync twin."""
    clock = FakeClock()
    outcomes = iter([ConnectionRefusedError(), ConnectionResetError(), "up"])

    async def connect() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    got = await eventually(connect, ignore=(OSError,), clock=clock, sleep=Sleeps(clock).coro)
    assert got == "up"


def test_free_port_can_be_bound_at_once() -> None:
    """free_port() gives a port in the ephemeral range that a listener can bind right away."""
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname()[1] == port
