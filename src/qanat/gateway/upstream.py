"""Where a route's requests go: instances, subsets, balancing, breakers and ejections.

A route's upstream is either ``kind: static`` (weighted URLs from config) or
``kind: service`` (names resolved per request through a ``Resolver``, so
discovery plugs in without the gateway awaiting it on the hot path).
Balancers come from ``qanat.core.balance`` (``pick(key)`` / ``done(endpoint,
ok, latency, now)``, exactly once per pick).

``Upstream.choose(headers, tried, now)`` makes the whole decision for one try,
synchronously: refresh the instance list, leave out the instances outlier
detection ejected (``InstanceHealth``; all of them past Envoy's panic
threshold), pick the canary subset (``SubsetChooser``), let its balancer
pick, prefer an instance this request has not tried yet, and take a ticket
from the instance's circuit breaker — or answer why not (no endpoint, every
breaker open). ``settle`` closes the pick with the outcome.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qanat.core.balance import make_balancer as _make_balancer
from qanat.core.outlier import CallError
from qanat.errors import ConfigError
from qanat.gateway.config import ServiceUpstream, StaticUpstream
from qanat.gateway.filters import HeaderList
from qanat.gateway.filters_traffic import SubsetChooser
from qanat.gateway.resilience import InstanceHealth, InstanceState
from qanat.ports import Instance

Endpoints = Sequence[tuple[str, str, int, int]]


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream endpoint in balancer shape (``id``, ``weight``, ``active``)."""

    id: str
    host: str
    port: int
    weight: int = 1
    active: bool = True
    version: str = ""
    tags: tuple[str, ...] = ()


class Resolver(Protocol):
    """Discovery for the gateway: the current endpoints of ``service``.

    Called per request, so it must answer from a cache without I/O. Returns
    ``(id, host, port, weight)`` tuples; an unknown service is an empty list.
    Returning the same list object while nothing changed lets the gateway skip
    rebuilding its balancer. A resolver that also has ``instances(service)``
    (``qanat.ports.Instance`` objects, as ``DiscoveryCache`` and
    ``StaticResolver`` do) serves routes with canary subsets (version, tags).
    """

    def endpoints(self, service: str) -> Endpoints: ...


class StaticResolver:
    """A ``Resolver`` over fixed ``qanat.ports.Instance`` lists (tests, examples).

    Only routable instances (enabled and not critical) are returned.
    """

    def __init__(self, services: Mapping[str, Sequence[Instance]] | None = None) -> None:
        self._lists: dict[str, list[tuple[str, str, int, int]]] = {}
        self._instances: dict[str, tuple[Instance, ...]] = {}
        for name, instances in (services or {}).items():
            self.set(name, instances)

    def set(self, service: str, instances: Sequence[Instance]) -> None:
        """Replace a service's instances."""
        routable = tuple(i for i in instances if i.routable)
        self._instances[service] = routable
        self._lists[service] = [(i.id, i.address, i.port, i.weight) for i in routable]

    def endpoints(self, service: str) -> Endpoints:
        return self._lists.get(service, [])

    def instances(self, service: str) -> Sequence[Instance]:
        return self._instances.get(service, ())


def make_balancer(name: str, where: str) -> Any:
    """A ``qanat.core.balance`` balancer by name; ConfigError names ``where``."""
    try:
        return _make_balancer(name)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source=where) from None


@dataclass(frozen=True, slots=True)
class Pick:
    """A target chosen for one try, with its breaker ticket and the balancer to settle."""

    target: Target
    ticket: int
    balancer: Any  # None when the target was taken without the balancer


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why no target could be chosen: ``circuit-open`` (with ``retry_after``) or ``no-endpoint``."""

    reason: str
    detail: str
    retry_after: float = 0.0


def _target(i: Any) -> Target:
    if isinstance(i, tuple):
        return Target(i[0], i[1], i[2], i[3])
    return Target(i.id, i.address, i.port, i.weight, True, i.version, tuple(i.tags))


class Upstream:
    """The instances of one route, its subsets, balancers, breakers and outlier detector."""

    __slots__ = ("_chooser", "_clock", "_epoch", "_fallback", "_fetch", "_groups", "_last",
                 "_service", "_subsets", "_targets", "description", "health")

    def __init__(self, spec: StaticUpstream | ServiceUpstream, resolver: Any, where: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        name = spec.service if isinstance(spec, ServiceUpstream) else where
        self._clock = clock
        self.health = InstanceHealth(spec.breaker, spec.outlier_detection, name, clock)
        self._subsets = dict(spec.subsets)
        self._fallback = spec.subset_fallback
        self._chooser = (SubsetChooser(spec.split, spec.subset_rules)
                         if spec.split or spec.subset_rules else None)
        at = f"{where}.upstream.balancer"
        self._groups: dict[str | None, Any] = {
            g: make_balancer(spec.balancer, at) for g in (None, *self._subsets)
        }
        self._targets: list[Target] = []
        self._last: Any = None
        self._epoch = -1
        self._fetch: Callable[[str], Sequence[Any]] | None = None
        if isinstance(spec, StaticUpstream):
            self._service = ""
            self.description = "static targets"
            self._set_targets([Target(t.url, t.host, t.port, t.weight, True, t.version,
                                      tuple(t.tags)) for t in spec.targets])
            return
        if resolver is None:
            raise ConfigError(
                f"upstream service {spec.service!r} needs a resolver (discovery); "
                "pass Gateway(resolver=...) or use kind: static",
                source=f"{where}.upstream",
            )
        self._service = spec.service
        self.description = f"service {spec.service!r}"
        if self._subsets:
            if not callable(getattr(resolver, "instances", None)):
                raise ConfigError(
                    "subsets need a resolver with instances(service) (versions and tags); "
                    f"{type(resolver).__name__} only has endpoints()",
                    source=f"{where}.upstream.subsets",
                )
            self._fetch = resolver.instances
        else:
            self._fetch = resolver.endpoints

    # -- the instance list ----------------------------------------------------------

    def _set_targets(self, targets: list[Target]) -> None:
        self._targets = targets
        self.health.update(t.id for t in targets)
        self._epoch = -1  # rebalance at the next refresh

    def _refresh(self, now: float) -> None:
        if self._fetch is not None:
            current = self._fetch(self._service)
            if current is not self._last and current != self._last:
                self._set_targets([_target(i) for i in current if getattr(i, "routable", True)])
            self._last = current
        epoch = self.health.epoch(now)
        if epoch != self._epoch:
            self._epoch = epoch
            kept = self.health.routable(self._targets, now)
            for group, balancer in self._groups.items():
                subset = self._subsets.get(group) if group is not None else None
                members = kept if subset is None else [
                    t for t in kept if subset.contains(t.version, t.tags)]
                balancer.update(members)

    # -- one try ---------------------------------------------------------------------

    def pick(self, key: str | None = None, subset: str | None = None) -> Target | None:
        """The balancer's next target in ``subset`` (all instances for None), or None.

        Refreshes the instance list first. ``choose`` calls this for every
        balancer pick, so a subclass can observe picks here.
        """
        self._refresh(self._clock())
        target: Target | None = self._groups[subset].pick(key)
        return target

    def done(self, target: Target, success: bool, latency: float, now: float,
             subset: str | None = None) -> None:
        """Close a ``pick`` of ``subset`` (exactly once per pick)."""
        self._groups[subset].done(target, success, latency, now)

    def choose(self, headers: HeaderList, tried: Sequence[str], now: float) -> Pick | Refusal:
        """A target for the next try whose breaker admits it, preferring untried ones."""
        group = self._chooser.choose(headers) if self._chooser is not None else None
        target = self.pick(None, group)
        if target is None and group is not None and self._fallback:
            group = None  # the subset is empty: borrow from every instance
            target = self.pick(None, group)
        if target is not None and not tried:  # the common case: first try, breaker closed
            ticket = self.health.breaker(target.id).allow(now)
            if ticket is not None:
                return Pick(target, ticket, self._groups[group])
        return self._choose_again(target, group, tried, now)

    def _choose_again(self, target: Target | None, group: str | None, tried: Sequence[str],
                      now: float) -> Pick | Refusal:
        """Re-pick past tried targets and open breakers, then walk the candidates."""
        balancer = self._groups[group]
        subset = self._subsets.get(group) if group is not None else None
        candidates = [t for t in self.health.routable(self._targets, now)
                      if subset is None or subset.contains(t.version, t.tags)]
        untried = [t for t in candidates if t.id not in tried]
        refused: set[str] = set()
        picks = 0
        while target is not None:
            if not (untried and target.id in tried) and target.id not in refused:
                ticket = self.health.breaker(target.id).allow(now)
                if ticket is not None:
                    return Pick(target, ticket, balancer)
                refused.add(target.id)
            balancer.done(target, True, 0.0, -math.inf)  # unused pick: nothing learned
            picks += 1
            target = self.pick(None, group) if picks <= len(candidates) else None
        for t in (*untried, *(t for t in candidates if t.id in tried)):
            if t.id not in refused:
                ticket = self.health.breaker(t.id).allow(now)
                if ticket is not None:
                    return Pick(t, ticket, None)
                refused.add(t.id)
        if refused:
            return Refusal("circuit-open",
                           f"the circuit breaker of every instance is open ({len(refused)})",
                           self.health.retry_after(refused, now))
        where = f" in subset {group!r}" if group is not None else ""
        return Refusal("no-endpoint", f"no available endpoint{where} ({self.description})")

    def settle(self, pick: Pick, outcome: int | CallError | None, latency: float,
               now: float) -> None:
        """Close ``pick``: breaker, outlier detector and balancer learn the outcome.

        ``outcome`` is the response status, a ``CallError``, or None when the
        failure was not the instance's (our own queue was full).
        """
        self.health.settle(pick.target.id, pick.ticket, outcome, now)
        if pick.balancer is None:
            return
        if outcome is None:  # nothing learned: an observation at -inf weighs nothing
            pick.balancer.done(pick.target, True, 0.0, -math.inf)
        else:
            pick.balancer.done(pick.target, isinstance(outcome, int) and outcome < 500,
                               latency, now)

    def state(self, now: float) -> tuple[InstanceState, ...]:
        """Every known instance with its breaker state and ejection (read-only)."""
        out = []
        for t in self._targets:
            breaker, retry_after, failures, until = self.health.state(t.id, now)
            out.append(InstanceState(t.id, t.host, t.port, t.version, breaker, retry_after,
                                     failures, until))
        return tuple(out)


__all__ = ["Pick", "Refusal", "Resolver", "StaticResolver", "Target", "Upstream",
           "make_balancer"]
