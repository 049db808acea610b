"""The instances of one target and what a client knows about each of them.

Synchronous and free of I/O: a discovery snapshot goes in, minus the
instances outlier detection ejected (``qanat.core.outlier``, Envoy's); the
balancer picks among the rest; each instance's own circuit breaker admits
or refuses; and the outcome of every attempt settles the breaker, the
detector and the balancer once. Nothing awaits between a pick and the
send, so asyncio tasks cannot interleave inside a choice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from qanat.core.balance import BALANCERS, Balancer, make_balancer
from qanat.core.breaker import CircuitBreaker
from qanat.core.outlier import CallError, OutlierDetector
from qanat.errors import CircuitOpenError, NoEndpoints
from qanat.ports import Instance
from qanat.runtime.client_settings import ClientSettings

Choice = tuple[Instance, CircuitBreaker, int, bool]
"""An admitted instance, its breaker, the breaker's ticket, and whether the balancer picked it."""

Header = tuple[bytes, bytes]


class TargetEndpoints:
    """Balancer, outlier detector and per-instance breakers for one target service.

    ``choose(snapshot, ...)`` refreshes from the discovery snapshot (an
    identity check when nothing changed), picks, and admits; ``settle(...)``
    closes an attempt. ``clock`` times breakers and the balancer.
    """

    def __init__(
        self, target: str, settings: ClientSettings, clock: Callable[[], float]
    ) -> None:
        self.target = target
        self._settings = settings
        self._clock = clock
        self.balancer: Balancer[Instance] = _balancer(settings.load_balancer, clock)
        self.outlier = OutlierDetector(settings.outlier)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.hosts: dict[str, Header] = {}  # instance id -> its host header, built once
        self.snapshot: tuple[Instance, ...] | None = None
        self.routable: Sequence[Instance] = ()
        self._epoch = -1

    def choose(
        self, snapshot: tuple[Instance, ...], key: str | None, tried: Sequence[str], now: float,
        state: Callable[[], str],
    ) -> Choice:
        """An instance whose breaker admits the call (with its ticket), preferring untried ones.

        Raises ``CircuitOpenError`` when every candidate's breaker refuses and
        ``NoEndpoints`` when there is no candidate (``state()`` describes
        discovery for the message).
        """
        outlier = self.outlier
        outlier.tick(now)
        if snapshot is not self.snapshot or outlier.epoch(now) != self._epoch:
            self._refresh(snapshot, now)
        instance = self.balancer.pick(key)
        if instance is not None and not tried:  # the common case: first pick, breaker closed
            breaker = self.breakers.get(instance.id) or self._new_breaker(instance.id)
            ticket = breaker.allow(now)
            if ticket is not None:
                return instance, breaker, ticket, True
        return self._choose_again(instance, key, tried, now, state)

    def _choose_again(
        self, instance: Instance | None, key: str | None, tried: Sequence[str], now: float,
        state: Callable[[], str],
    ) -> Choice:
        """Re-pick past tried instances and refusing breakers; then walk the list.

        Each unused pick is closed at once (``release``). A balancer that keeps
        offering the same instance (a hash ring does, for one key) is bounded
        by the number of candidates; then the candidates are tried in order,
        untried first, without the balancer.
        """
        candidates = self.routable
        untried = [i for i in candidates if i.id not in tried]
        refused: set[str] = set()
        picks = 0
        while instance is not None:
            if not (untried and instance.id in tried) and instance.id not in refused:
                breaker = self.breakers.get(instance.id) or self._new_breaker(instance.id)
                ticket = breaker.allow(now)
                if ticket is not None:
                    return instance, breaker, ticket, True
                refused.add(instance.id)
            self.release(instance)
            picks += 1
            instance = self.balancer.pick(key) if picks <= len(candidates) else None
        for candidate in (*untried, *(i for i in candidates if i.id in tried)):
            if candidate.id in refused:
                continue
            breaker = self.breakers.get(candidate.id) or self._new_breaker(candidate.id)
            ticket = breaker.allow(now)
            if ticket is not None:
                return candidate, breaker, ticket, False
            refused.add(candidate.id)
        if refused:
            raise CircuitOpenError(
                f"{self.target}: the circuit breaker of every instance is open "
                f"({len(refused)} instance(s))",
                retry_after=self._settings.breaker.timeout,
            )
        raise NoEndpoints(f"no available instance of {self.target!r} (discovery: {state()})")

    def _refresh(self, snapshot: tuple[Instance, ...], now: float) -> None:
        """Feed the balancer after discovery or the ejected set changed."""
        if snapshot is not self.snapshot:
            ids = {i.id for i in snapshot}
            self.outlier.update(ids)
            for gone in [i for i in self.breakers if i not in ids]:
                del self.breakers[gone]
            self.hosts = {i.id: host_header(i) for i in snapshot}
            self.snapshot = snapshot
        kept = self.outlier.apply(snapshot, now)
        if 2 * len(kept) < len(snapshot):
            kept = list(snapshot)  # Envoy's panic threshold: better all than too few
        self.routable = kept
        self._epoch = self.outlier.epoch(now)
        self.balancer.update(kept)

    def _new_breaker(self, instance_id: str) -> CircuitBreaker:
        breaker = CircuitBreaker(
            self._settings.breaker, clock=self._clock, name=f"{self.target}/{instance_id}"
        )
        self.breakers[instance_id] = breaker
        return breaker

    def release(self, instance: Instance) -> None:
        """Close a pick that was not used: its slot back, nothing learned."""
        self.balancer.cancel(instance)

    def unchoose(self, choice: Choice, now: float) -> None:
        """Hand back a choice that will not be sent: its breaker ticket and balancer pick."""
        instance, breaker, ticket, picked = choice
        breaker.after_excluded(ticket, now)
        if picked:
            self.release(instance)

    def settle(
        self, choice: Choice, verdict: bool | None, observed: int | CallError | None,
        neutral: bool, latency: float, now: float,
    ) -> None:
        """Close one attempt: breaker (success, failure, or excluded when ``verdict`` is None),
        outlier detector (``observed``, if any), balancer (without feedback if ``neutral``)."""
        instance, breaker, ticket, picked = choice
        if verdict is None:
            breaker.after_excluded(ticket, now)
        else:
            breaker.after(ticket, verdict, now)
        if observed is not None:
            self.outlier.record(instance.id, observed, now)
        if neutral and picked:
            self.release(instance)
        elif picked:
            self.balancer.done(instance, bool(verdict), latency, now)
        else:
            self.balancer.report(instance.id, bool(verdict), latency, now)

    def stats(self, now: float) -> dict[str, Any]:
        """Instance counts, breaker states and ejected ids at ``now``."""
        return {
            "instances": len(self.snapshot or ()),
            "routable": len(self.routable),
            "breakers": {i: b.stats(now).state.value for i, b in self.breakers.items()},
            "ejected": sorted(self.outlier.ejected(now)),
        }


def host_header(instance: Instance) -> Header:
    """The ``host`` field for an instance (IPv6 addresses in brackets)."""
    host = f"[{instance.address}]" if ":" in instance.address else instance.address
    return (b"host", f"{host}:{instance.port}".encode())


def _balancer(name: str, clock: Callable[[], float]) -> Balancer[Instance]:
    """The named balancer, on the client's clock when it takes one."""
    cls = BALANCERS.get(name)
    takes_clock = cls is not None and "clock" in inspect.signature(cls).parameters
    return make_balancer(name, clock=clock) if takes_clock else make_balancer(name)


__all__ = ["Choice", "TargetEndpoints", "host_header"]
