"""Envoy's least-request balancer: fewest active requests among a few random choices."""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from typing import Generic

from qanat.core.balance.base import E, EndpointLike, eligible, uniform
from qanat.errors import ConfigError


class _Host(Generic[E]):
    __slots__ = ("active", "endpoint")

    def __init__(self, endpoint: E) -> None:
        self.endpoint = endpoint
        self.active = 0


class LeastRequest(Generic[E]):
    """Envoy's ``LEAST_REQUEST`` (``source/common/upstream/load_balancer_impl.cc``).

    Equal weights: draw ``choice_count`` endpoints at random (with
    replacement, default 2) and take the one with the fewest active requests,
    the first drawn on a tie. O(choice_count) per pick.

    Unequal weights: earliest-deadline-first scheduling where an endpoint's
    effective weight is ``weight / (active + 1) ** active_request_bias``
    (bias default 1.0; 0 gives plain weighted round robin), computed when the
    endpoint is scheduled, as Envoy does. O(log n) per pick (a heap).

    ``pick`` counts the request as active and ``done`` ends it; counts of
    staying endpoints survive ``update``.
    """

    __slots__ = (
        "_bias", "_by_id", "_choices", "_heap", "_hosts", "_random", "_seq", "_vtime",
        "_weighted",
    )  # fmt: skip

    def __init__(
        self,
        endpoints: Sequence[E] = (),
        *,
        choice_count: int = 2,
        active_request_bias: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if choice_count < 1:
            raise ConfigError(
                f"choice_count must be >= 1, got {choice_count}", source="LeastRequest"
            )
        if not active_request_bias >= 0:
            raise ConfigError(
                f"active_request_bias must be >= 0, got {active_request_bias}",
                source="LeastRequest",
            )
        self._choices = choice_count
        self._bias = active_request_bias
        self._random = uniform(rng)
        self._hosts: list[_Host[E]] = []
        self._by_id: dict[str, _Host[E]] = {}
        self._heap: list[tuple[float, int, _Host[E]]] = []
        self._vtime = 0.0  # the EDF scheduler's virtual time
        self._seq = 0  # insertion order breaks deadline ties, as Envoy's scheduler does
        self._weighted = False
        self.update(endpoints)

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set; staying endpoints keep their active counts."""
        hosts: list[_Host[E]] = []
        for endpoint in eligible(endpoints, "LeastRequest.update"):
            host = self._by_id.get(endpoint.id) or _Host(endpoint)
            host.endpoint = endpoint
            hosts.append(host)
        self._hosts = hosts
        self._by_id = {h.endpoint.id: h for h in hosts}
        self._weighted = len({h.endpoint.weight for h in hosts}) > 1
        self._heap = []
        if self._weighted:
            for host in hosts:
                self._schedule(host, self._vtime)

    def _schedule(self, host: _Host[E], now: float) -> None:
        weight = host.endpoint.weight / (host.active + 1) ** self._bias
        self._seq += 1
        heapq.heappush(self._heap, (now + 1.0 / weight, self._seq, host))

    def pick(self, key: str | None = None) -> E | None:
        """The endpoint with the fewest active requests among the choices; ``key`` is ignored."""
        hosts = self._hosts
        if not hosts:
            return None
        if self._weighted:
            deadline, _, best = heapq.heappop(self._heap)
            self._vtime = deadline
            self._schedule(best, deadline)  # weight from the count before this request
        else:
            draw, count = self._random, len(hosts)
            best = hosts[int(draw() * count)]
            for _ in range(self._choices - 1):
                other = hosts[int(draw() * count)]
                if other.active < best.active:
                    best = other
        best.active += 1
        return best.endpoint

    def done(self, endpoint: EndpointLike, success: bool, latency: float, now: float) -> None:
        """Close a ``pick``: the request is no longer active."""
        host = self._by_id.get(endpoint.id)
        if host is not None and host.active > 0:
            host.active -= 1

    def cancel(self, endpoint: EndpointLike) -> None:
        """Close an unused ``pick``: the same as ``done`` here (only counts matter)."""
        self.done(endpoint, True, 0.0, 0.0)

    def report(self, endpoint_id: str, success: bool, latency: float, now: float) -> None:
        """Ignored: only active-request counts matter here."""

    def active(self, endpoint_id: str) -> int:
        """Active (picked, not yet done) requests of ``endpoint_id``."""
        host = self._by_id.get(endpoint_id)
        return host.active if host is not None else 0
