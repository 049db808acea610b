"""Power of two choices over peak-EWMA latency (Finagle, linkerd)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from math import exp
from typing import Generic

from qanat.core.balance.base import E, EndpointLike, eligible, uniform
from qanat.errors import ConfigError


class _Peer(Generic[E]):
    """Per-endpoint state: latency estimate, when it was last observed, in-flight count."""

    __slots__ = ("endpoint", "ewma", "in_flight", "stamp")

    def __init__(self, endpoint: E, ewma: float, stamp: float) -> None:
        self.endpoint = endpoint
        self.ewma = ewma
        self.stamp = stamp
        self.in_flight = 0


class PeakEwmaP2C(Generic[E]):
    """Pick two endpoints at random and send to the less loaded one.

    Load is ``cost * (in_flight + 1)``, where cost is the peak-EWMA latency
    decayed to now: ``ewma * exp(-(now - last_observation) / decay)``. The
    estimate follows Finagle's ``PeakEwma``: a latency above the estimate
    replaces it at once (the peak), a lower one is blended in with weight
    ``1 - exp(-elapsed / decay)``, so the estimate is quick to rise and slow
    to fall. Decay towards zero while an endpoint gets no traffic makes an
    idle endpoint worth trying again. Two random choices (Mitzenmacher, "The
    Power of Two Choices in Randomized Load Balancing", 2001) avoid the herd
    that always-pick-the-best causes when many clients see the same numbers.

    ``pick`` is O(1) and takes an in-flight slot; ``done`` gives it back and
    feeds the latency (``report`` feeds a latency without a slot). ``decay``
    is the time constant in seconds (default 10 s, Finagle's and linkerd's);
    ``default_latency`` seeds new endpoints (default 30 ms); ``clock`` gives
    ``now`` at pick time (observations carry their own ``now``). Weights
    are ignored, except that 0 drains an endpoint.
    """

    __slots__ = ("_by_id", "_clock", "_decay", "_default", "_peers", "_random")

    def __init__(
        self,
        endpoints: Sequence[E] = (),
        *,
        decay: float = 10.0,
        default_latency: float = 0.030,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not decay > 0:
            raise ConfigError(f"decay must be > 0 seconds, got {decay}", source="PeakEwmaP2C")
        if not default_latency >= 0:
            raise ConfigError(
                f"default_latency must be >= 0 seconds, got {default_latency}",
                source="PeakEwmaP2C",
            )
        self._decay = decay
        self._default = default_latency
        self._clock = clock
        self._random = uniform(rng)
        self._peers: list[_Peer[E]] = []
        self._by_id: dict[str, _Peer[E]] = {}
        self.update(endpoints)

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set; staying endpoints keep their estimate and in-flight count."""
        now = self._clock()
        peers: list[_Peer[E]] = []
        for endpoint in eligible(endpoints, "PeakEwmaP2C.update"):
            peer = self._by_id.get(endpoint.id)
            if peer is None:
                peer = _Peer(endpoint, self._default, now)
            peer.endpoint = endpoint
            peers.append(peer)
        self._peers = peers
        self._by_id = {p.endpoint.id: p for p in peers}

    def pick(self, key: str | None = None) -> E | None:
        """The less loaded of two random endpoints; ``key`` is ignored. O(1)."""
        peers = self._peers
        count = len(peers)
        if count < 2:
            if not count:
                return None
            peer = peers[0]
        else:
            draw = self._random
            first = int(draw() * count)
            second = int(draw() * (count - 1))
            if second >= first:  # two distinct endpoints, uniformly
                second += 1
            a, b = peers[first], peers[second]
            now, decay = self._clock(), self._decay
            load_a = a.ewma * exp(min(0.0, a.stamp - now) / decay) * (a.in_flight + 1)
            load_b = b.ewma * exp(min(0.0, b.stamp - now) / decay) * (b.in_flight + 1)
            peer = a if load_a <= load_b else b
        peer.in_flight += 1
        return peer.endpoint

    def done(self, endpoint: EndpointLike, success: bool, latency: float, now: float) -> None:
        """Close a ``pick``: give back its in-flight slot and observe its latency."""
        peer = self._by_id.get(endpoint.id)
        if peer is None:  # removed by update meanwhile: nothing to give back
            return
        if peer.in_flight > 0:
            peer.in_flight -= 1
        self._observe(peer, latency, now)

    def cancel(self, endpoint: EndpointLike) -> None:
        """Close an unused ``pick``: give back its in-flight slot, observe nothing."""
        peer = self._by_id.get(endpoint.id)
        if peer is not None and peer.in_flight > 0:
            peer.in_flight -= 1

    def report(self, endpoint_id: str, success: bool, latency: float, now: float) -> None:
        """Observe a latency for ``endpoint_id`` without touching in-flight counts."""
        peer = self._by_id.get(endpoint_id)
        if peer is not None:
            self._observe(peer, latency, now)

    def _observe(self, peer: _Peer[E], latency: float, now: float) -> None:
        if latency > peer.ewma:
            peer.ewma = latency  # the peak: believe bad news at once
        else:
            weight = exp(min(0.0, peer.stamp - now) / self._decay)
            peer.ewma = peer.ewma * weight + latency * (1.0 - weight)
        peer.stamp = max(peer.stamp, now)

    def estimate(self, endpoint_id: str, now: float) -> float:
        """The endpoint's latency estimate decayed to ``now``, in seconds (0.0 if unknown)."""
        peer = self._by_id.get(endpoint_id)
        if peer is None:
            return 0.0
        return peer.ewma * exp(min(0.0, peer.stamp - now) / self._decay)

    def in_flight(self, endpoint_id: str) -> int:
        """Picks of ``endpoint_id`` not yet closed by ``done``."""
        peer = self._by_id.get(endpoint_id)
        return peer.in_flight if peer is not None else 0
