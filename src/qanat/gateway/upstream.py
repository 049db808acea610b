"""Where a route's requests go: instances, subsets, balancing, breakers and ejections.

A route's upstream is either ``kind: static`` (weighted URLs from config) or
``kind: service`` (names resolved per request through a ``Resolver``, so
discovery plugs in without the gateway awaiting it on the hot path).
Balancers come from ``qanat.core.balance`` (``pick(key)`` / ``done(endpoint,
ok, latency, now)``, exactly once per pick).

``Upstream.choose(headers, tried, now, peer)`` makes the whole decision for
one try, synchronously: refresh the instance list, leave out the instances
outlier detection ejected (``InstanceHealth``; all of them past Envoy's panic
threshold), pick the canary subset (``SubsetChooser``), let its balancer
pick — with the request's hash key (``hash_on``) for ``consistent_hash`` —
prefer an instance this request has not tried yet, and take a ticket
from the instance's circuit breaker — or answer why not (no endpoint, every
breaker open). ``settle`` closes the pick with the outcome.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qanat.core.balance import make_balancer as _make_balancer
from qanat.core.outlier import CallError
from qanat.errors import ConfigError
from qanat.gateway.config_upstream import HashOn, ServiceUpstream, StaticUpstream
from qanat.gateway.filters import HeaderList
from qanat.gateway.filters_traffic import SubsetChooser, cookie
from qanat.gateway.instance_health import InstanceHealth, InstanceState
from qanat.gateway.resolver import Endpoints, Resolver, StaticResolver, Target, as_target

HashKey = Callable[[HeaderList, bytes], str | None]

def make_balancer(name: str, where: str, **options: Any) -> Any:
    """A ``qanat.core.balance`` balancer by name; ConfigError names ``where``."""
    try:
        return _make_balancer(name, **options)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source=where) from None


def hash_key(hash_on: HashOn | None) -> HashKey | None:
    """How to read a request's consistent-hash key: ``(headers, peer) -> key``.

    The key is the first value of ``header``, the value of ``cookie``, or the
    peer address for ``source: client_address``; None (absent or empty) makes
    the ring pick at random, as Envoy does when a hash policy yields no hash.
    """
    if hash_on is None:
        return None
    if hash_on.header is not None:
        name = hash_on.header.lower().encode()

        def from_header(headers: HeaderList, peer: bytes) -> str | None:
            for k, v in headers:
                if k == name:
                    return v.decode("latin-1") or None
            return None

        return from_header
    if hash_on.cookie is not None:
        jar = hash_on.cookie.encode()

        def from_cookie(headers: HeaderList, peer: bytes) -> str | None:
            value = cookie(headers, jar)
            return value.decode("latin-1") if value else None

        return from_cookie
    return lambda headers, peer: peer.decode("latin-1") or None


def _rehash(key: str | None, attempt: int) -> str | None:
    """A different, still deterministic key for re-pick ``attempt`` (>= 1).

    Envoy's ring hash mutates the hash per host-selection attempt so a retry
    for a key leaves a failed instance for one fixed other, and the keys of
    one failed instance spread over the rest instead of all landing on its
    neighbour.
    """
    return None if key is None else f"{key}\x00{attempt}"


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


class Upstream:
    """The instances of one route, its subsets, balancers, breakers and outlier detector."""

    __slots__ = ("_chooser", "_clock", "_epoch", "_fallback", "_fetch", "_groups", "_key",
                 "_last", "_service", "_subsets", "_targets", "description", "health", "spec")

    def __init__(self, spec: StaticUpstream | ServiceUpstream, resolver: Any, where: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        name = spec.service if isinstance(spec, ServiceUpstream) else where
        self.spec = spec
        self._clock = clock
        self._key = hash_key(spec.hash_on)
        self.health = InstanceHealth(spec.breaker, spec.outlier_detection, name, clock)
        self._subsets = dict(spec.subsets)
        self._fallback = spec.subset_fallback
        self._chooser = (SubsetChooser(spec.split, spec.subset_rules)
                         if spec.split or spec.subset_rules else None)
        at = f"{where}.upstream.balancer"
        options = spec.balancer_options
        self._groups: dict[str | None, Any] = {
            g: make_balancer(spec.balancer, at, **options) for g in (None, *self._subsets)
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

    @property
    def size(self) -> int:
        """The instances known (the retry budget's floor scales with the load per instance)."""
        return len(self._targets)

    def spread(self, failed: str) -> int:
        """The instances the calls were spread over when a try to ``failed`` (an id) failed:
        those known now, and ``failed`` too if it is gone since. An instance that died and
        was deregistered held its share of the calls, and each of them retries now; counting
        only the survivors would shrink the retry budget's floor just when it is needed."""
        if any(t.id == failed for t in self._targets):
            return len(self._targets)
        return len(self._targets) + 1

    def _set_targets(self, targets: list[Target]) -> None:
        self._targets = targets
        self.health.update(t.id for t in targets)
        self._epoch = -1  # rebalance at the next refresh

    def _refresh(self, now: float) -> None:
        if self._fetch is not None:
            current = self._fetch(self._service)
            if current is not self._last and current != self._last:
                self._set_targets([as_target(i) for i in current if getattr(i, "routable", True)])
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

    def choose(self, headers: HeaderList, tried: Sequence[str], now: float,
               peer: bytes = b"") -> Pick | Refusal:
        """A target for the next try whose breaker admits it, preferring untried ones.

        ``peer`` is the client's address (the hash key of ``source: client_address``).
        """
        group: str | None = self._chooser.choose(headers) if self._chooser is not None else None
        key = self._key(headers, peer) if self._key is not None else None
        target = self.pick(key, group)
        if target is None and group is not None and self._fallback:
            group = None  # the subset is empty: borrow from every instance
            target = self.pick(key, group)
        if target is not None and not tried:  # the common case: first try, breaker closed
            ticket = self.health.breaker(target.id).allow(now)
            if ticket is not None:
                return Pick(target, ticket, self._groups[group])
        return self._choose_again(target, group, tried, now, key)

    def _choose_again(self, target: Target | None, group: str | None, tried: Sequence[str],
                      now: float, key: str | None = None) -> Pick | Refusal:
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
            target = self.pick(_rehash(key, picks), group) if picks <= len(candidates) else None
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
        return tuple(self.health.state(t, now) for t in self._targets)


__all__ = ["Endpoints", "HashKey", "Pick", "Refusal", "Resolver", "StaticResolver", "Target",
           "Upstream", "hash_key", "make_balancer"]
