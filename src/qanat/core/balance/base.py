"""What every balancer shares: the endpoint shape, the ``Balancer`` protocol, helpers.

The calling convention, the same for every algorithm::

    endpoint = balancer.pick(key)          # None when no endpoint is eligible
    if endpoint is None:
        raise NoEndpoints(...)
    try:
        ...                                # the call
    finally:
        balancer.done(endpoint, ok, latency, now)   # exactly once per pick

``pick`` takes any in-flight slot the algorithm needs and ``done`` gives it
back, so there is one call on each side of a request and nothing to pair by
hand. ``report`` feeds an outcome that did not come from a ``pick`` (a health
probe, a shadow call) and never touches in-flight counts.

Thread-safety: balancers are plain objects for one event loop. Every method
is synchronous and never awaits, so asyncio tasks cannot interleave inside a
call; sharing one balancer between OS threads needs a lock around it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from qanat.errors import ConfigError


@runtime_checkable
class EndpointLike(Protocol):
    """Anything a balancer can route to: ``qanat.ports.Instance`` and ``Endpoint`` fit."""

    @property
    def id(self) -> str: ...

    @property
    def weight(self) -> int: ...

    @property
    def active(self) -> bool: ...


E = TypeVar("E", bound=EndpointLike)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ready-made endpoint: an ``id``, a ``weight`` (0 drains it) and ``active``.

    ``address`` and ``payload`` are carried for the caller and never read by a
    balancer.
    """

    id: str
    weight: int = 1
    active: bool = True
    address: str = ""
    payload: object = None


class Balancer(Protocol[E]):
    """Chooses one endpoint per call. See the module docstring for the convention."""

    def pick(self, key: str | None = None) -> E | None:
        """An eligible endpoint (active, weight > 0), or None when there is none."""
        ...

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set; per-endpoint state of ids that stay is kept."""
        ...

    def report(self, endpoint_id: str, success: bool, latency: float, now: float) -> None:
        """Feed the outcome of a call that was not picked here (no in-flight change)."""
        ...

    def done(self, endpoint: E, success: bool, latency: float, now: float) -> None:
        """Close a ``pick``: call exactly once for every endpoint ``pick`` returned."""
        ...

    def cancel(self, endpoint: E) -> None:
        """Close a ``pick`` that was not used (e.g. its breaker refused): the in-flight
        slot goes back and nothing is learned. Use instead of ``done``, never both."""
        ...


def eligible(endpoints: Sequence[E], source: str) -> list[E]:
    """The endpoints a balancer may pick, in order: active ones with weight > 0.

    Raises ``ConfigError`` for a negative weight or a repeated id, naming it.
    """
    seen: set[str] = set()
    out: list[E] = []
    for endpoint in endpoints:
        if endpoint.id in seen:
            raise ConfigError(
                f"endpoint id {endpoint.id!r} appears twice; ids must be unique", source=source
            )
        seen.add(endpoint.id)
        if endpoint.weight < 0:
            raise ConfigError(
                f"endpoint {endpoint.id!r} has weight {endpoint.weight}; "
                "use a weight >= 0 (0 drains the endpoint)",
                source=source,
            )
        if endpoint.active and endpoint.weight > 0:
            out.append(endpoint)
    return out


def uniform(rng: random.Random | None) -> Callable[[], float]:
    """A zero-argument source of floats in [0, 1): ``rng.random`` or a fresh generator's."""
    return (rng if rng is not None else random.Random()).random

