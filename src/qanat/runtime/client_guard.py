"""A target's adaptive throttle and bulkhead, applied by the service client to each attempt.

The policy order (``docs/policies.md``) is kept inside every attempt::

    throttle > circuit breaker > bulkhead > per-try timeout > send

1. The **adaptive throttle** (Google SRE book, ch. 21; ``qanat.core.throttle``)
   sheds the attempt locally with probability
   ``max(0, (requests - K * accepts) / (requests + 1))``: ``Overloaded``,
   nothing sent. It learns from each attempt that was sent: an answer below
   500 other than 429 is an accept; a 5xx, a 429 (the backend refusing for
   load), a connect failure, a reset or a timeout is not. Attempts the
   instance had no part in (an invalid request, the local pool's queue full,
   a cancellation) are not counted, as the breaker excludes them.
2. The instance's **breaker** admits it (``TargetEndpoints.choose``), so an
   attempt every breaker refuses costs no bulkhead slot.
3. The **bulkhead** (``qanat.runtime.bulkhead``) bounds the attempts in flight
   from this process to the target. A free slot is taken at once; otherwise
   the pick and the breaker's ticket are handed back before waiting in the
   bulkhead's queue (so no half-open trial slot or balancer count is held by
   a waiter) and the instance is chosen again once a slot comes. A full
   queue, ``max_wait`` passed or the call's deadline reached while queued
   raise ``Overloaded`` naming the target; nothing was sent.

The slot is given back and the outcome recorded when the attempt settles
(``client_attempt.Attempts.send``), exactly once.

``stats`` reports both components' own stats and how many of this client's
attempts each one refused (the throttle and the bulkhead are the policy's
objects, shared with the policy used as a decorator; the refusals counted
here are the client's only, the deadline ones included, which the bulkhead
cannot tell from a cancellation). The counts move only on a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from qanat.core.throttle import AdaptiveThrottle
from qanat.errors import Overloaded
from qanat.runtime.bulkhead import Bulkhead
from qanat.runtime.client_endpoints import Choice
from qanat.runtime.client_request import Prepared

_REFUSED = 429  # Too Many Requests: an answer, but the backend refusing for load or quota


class TargetGuard:
    """The throttle and the bulkhead of one target (either may be None, not both)."""

    __slots__ = ("_clock", "_no_slot", "_shed", "bulkhead", "target", "throttle")

    def __init__(
        self,
        target: str,
        throttle: AdaptiveThrottle | None,
        bulkhead: Bulkhead | None,
        clock: Callable[[], float],
    ) -> None:
        self.target = target
        self.throttle = throttle
        self.bulkhead = bulkhead
        self._clock = clock
        self._shed = 0  # attempts the throttle refused
        self._no_slot = 0  # attempts refused for want of a bulkhead slot

    async def admit(
        self,
        choose: Callable[[float], Choice],
        unchoose: Callable[[Choice, float], None],
        prepared: Prepared,
        deadline: float,
    ) -> Choice:
        """Throttle, then ``choose`` (breakers), then a bulkhead slot; the admitted choice.

        Raises ``Overloaded`` (shed, or no slot), or whatever ``choose``
        raises (``CircuitOpenError``, ``NoEndpoints``); nothing is then held.
        """
        now = self._clock()
        throttle = self.throttle
        if throttle is not None and not throttle.allow(now):
            self._shed += 1
            raise Overloaded(
                f"{self.target}: shed by adaptive throttling, the instances are refusing "
                f"calls (reject probability now {throttle.reject_probability(now):.2f}); "
                f"{_what(prepared)} was not sent"
            )
        choice = choose(now)
        bulkhead = self.bulkhead
        if bulkhead is None or bulkhead.try_acquire():
            return choice
        unchoose(choice, now)  # wait holding neither a breaker ticket nor a balancer pick
        await self._wait(bulkhead, prepared, deadline - now)
        try:
            return choose(self._clock())
        except BaseException:
            bulkhead.release()
            raise

    async def _wait(self, bulkhead: Bulkhead, prepared: Prepared, left: float) -> None:
        """Wait in the bulkhead's queue, at most ``left`` seconds (the call's deadline)."""
        try:
            async with asyncio.timeout(max(0.0, left)):
                await bulkhead.acquire()
        except Overloaded as exc:  # the queue was full, or max_wait passed
            self._no_slot += 1
            raise Overloaded(f"{self.target}: {_what(prepared)} was not sent: {exc}") from None
        except TimeoutError:
            self._no_slot += 1
            raise Overloaded(
                f"{self.target}: no bulkhead slot came before the call's deadline "
                f"({_limits(bulkhead)}); {_what(prepared)} was not sent"
            ) from None

    def settle(self, verdict: bool | None, status: int | None, now: float) -> None:
        """Close an admitted attempt: teach the throttle (unless excluded), free the slot."""
        throttle = self.throttle
        if throttle is not None and verdict is not None:
            throttle.record(verdict and status != _REFUSED, now)
        if self.bulkhead is not None:
            self.bulkhead.release()

    def stats(self, now: float) -> dict[str, Any]:
        """The bulkhead's and the throttle's stats (None for the one the target lacks), and
        ``refused``: how many of this client's attempts each refused, by ``"bulkhead"`` and
        ``"throttle"``."""
        return {
            "bulkhead": None if self.bulkhead is None else self.bulkhead.stats(),
            "throttle": None if self.throttle is None else self.throttle.stats(now),
            "refused": {"bulkhead": self._no_slot, "throttle": self._shed},
        }


def _what(prepared: Prepared) -> str:
    return f"{prepared.verb.decode()} {prepared.target.decode('utf-8', 'replace')}"


def _limits(bulkhead: Bulkhead) -> str:
    s = bulkhead.stats()
    return (f"{s.in_flight} running, max_concurrent={s.max_concurrent}; "
            f"{s.queued} queued, max_queue={s.max_queue}")


__all__ = ["TargetGuard"]
