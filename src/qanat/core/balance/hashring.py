"""Consistent hashing on a ring of virtual nodes, with optional bounded loads.

Sources: Karger et al., "Consistent Hashing and Random Trees" (STOC 1997) for
the ring; ketama (libmemcached) for virtual nodes in proportion to weight;
Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads"
(SODA 2018, Google 2017) for the load cap, as HAProxy's ``hash-balance-factor``
applies it to in-flight requests.
"""

from __future__ import annotations

import math
import random
import struct
from bisect import bisect_left
from collections.abc import Sequence
from hashlib import blake2b
from typing import Generic

from qanat.core.balance.base import E, EndpointLike, eligible, uniform
from qanat.errors import ConfigError

DEFAULT_REPLICAS = 512
DEFAULT_MAX_POINTS = 1 << 20
_RING = 1 << 64
_SHIFT = 32  # while building, entries are point << 32 | the owner's serial number
_MASK = (1 << _SHIFT) - 1
_EIGHT = struct.Struct(">8Q")


def hash64(text: str) -> int:
    """A 64-bit hash that is the same in every process (``hash()`` is salted per process)."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


def _ring_points(ident: str, count: int, serial: int) -> list[int]:
    """``count`` points for endpoint ``ident``, sorted, tagged with ``serial``.

    One 64-byte BLAKE2b digest of ``f"{ident}#{block}"`` gives eight 64-bit
    points, so building is 8x cheaper than one hash per point. The points are
    a prefix-stable sequence: raising a weight only adds points.
    """
    points: list[int] = []
    for block in range((count + 7) // 8):
        points.extend(_EIGHT.unpack(blake2b(f"{ident}#{block}".encode(), digest_size=64).digest()))
    return sorted([(p << _SHIFT) | serial for p in points[:count]])


class ConsistentHash(Generic[E]):
    """Map keys to endpoints so that few keys move when endpoints come and go.

    Each endpoint owns ``replicas * weight`` points on a 64-bit ring, derived
    from BLAKE2b digests of its id; a key goes to the owner of the first point at or
    after ``hash64(key)``. Points depend only on the endpoint's id and
    weight, so adding endpoint n+1 moves about 1/(n+1) of the keys, all to
    it, and removing one moves only its own keys. With the default 512
    replicas a node's share is within a few percent of 1/n (relative spread
    about 1/sqrt(512) = 4.4 %).

    ``pick`` is O(log(n * replicas)): a hash and a binary search. A ``None``
    key picks a random point (``rng``).

    ``epsilon`` turns on bounded loads: no endpoint takes more than
    ``ceil((1 + epsilon) * m * weight / total_weight)`` of the ``m`` in-flight
    requests (the one being placed included); a key whose endpoint is full
    walks clockwise to the next one with room. Loads are in-flight counts, so
    every ``pick`` must be closed by ``done``. The walk is O(1/epsilon^2)
    expected extra steps (Mirrokni et al.), O(points) worst case.

    ``update`` re-uses the points of staying endpoints and rebuilds the sorted
    ring: O(P log n) for P points. A ring over ``max_points`` raises
    ``ConfigError``: lower ``replicas`` or the weights.
    """

    __slots__ = (
        "_cache", "_endpoints", "_epsilon", "_load", "_max_points", "_owners", "_points",
        "_random", "_replicas", "_serial", "_total_load", "_weight_sum",
    )  # fmt: skip

    def __init__(
        self,
        endpoints: Sequence[E] = (),
        *,
        replicas: int = DEFAULT_REPLICAS,
        epsilon: float | None = None,
        max_points: int = DEFAULT_MAX_POINTS,
        rng: random.Random | None = None,
    ) -> None:
        if replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {replicas}", source="ConsistentHash")
        if epsilon is not None and not epsilon > 0:
            raise ConfigError(
                f"epsilon must be > 0 (or None to turn bounded loads off), got {epsilon}",
                source="ConsistentHash",
            )
        self._replicas = replicas
        self._epsilon = epsilon
        self._max_points = max_points
        self._random = uniform(rng)
        # id -> (serial number, point count, its ring entries); kept while the id stays
        self._cache: dict[str, tuple[int, int, list[int]]] = {}
        self._serial = 0
        self._endpoints: list[E] = []
        self._points: list[int] = []  # sorted ring positions
        self._owners: list[E] = []  # the endpoint at each position
        self._load: dict[str, int] = {}
        self._total_load = 0
        self._weight_sum = 0
        self.update(endpoints)

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set; staying endpoints keep their points and loads."""
        new = eligible(endpoints, "ConsistentHash.update")
        size = self._replicas * sum(e.weight for e in new)
        if size > self._max_points:
            raise ConfigError(
                f"the ring would hold {size} points (replicas {self._replicas} x total weight), "
                f"over max_points {self._max_points}; lower replicas or the weights",
                source="ConsistentHash.update",
            )
        cache: dict[str, tuple[int, int, list[int]]] = {}
        ring: list[int] = []
        table: dict[int, E] = {}
        for endpoint in new:
            count = self._replicas * endpoint.weight
            number, cached_count, points = self._cache.get(endpoint.id, (-1, -1, []))
            if number < 0:
                number, self._serial = self._serial, self._serial + 1
            if cached_count != count:
                points = _ring_points(endpoint.id, count, number)
            cache[endpoint.id] = (number, count, points)
            table[number] = endpoint
            ring.extend(points)
        ring.sort()  # timsort merges the already-sorted runs: O(P log n)
        self._cache = cache
        # Split into plain 64-bit positions and owners: the hot path bisects small ints.
        self._points = [entry >> _SHIFT for entry in ring]
        self._owners = [table[entry & _MASK] for entry in ring]
        self._endpoints = new
        self._weight_sum = sum(e.weight for e in new)
        self._load = {e.id: self._load.get(e.id, 0) for e in new}
        self._total_load = sum(self._load.values())

    def owner(self, key: str) -> E | None:
        """The endpoint that owns ``key`` on the ring, ignoring loads. O(log P)."""
        points = self._points
        if not points:
            return None
        index = bisect_left(points, hash64(key))
        return self._owners[index if index < len(points) else 0]

    def pick(self, key: str | None = None) -> E | None:
        """The endpoint for ``key`` (random when None), bounded by load when ``epsilon`` is set."""
        points = self._points
        if not points:
            return None
        position = hash64(key) if key is not None else int(self._random() * _RING)
        index = bisect_left(points, position)
        if index == len(points):
            index = 0
        if self._epsilon is None:
            return self._owners[index]
        return self._place(index)

    def _place(self, index: int) -> E:
        """Walk clockwise from ``index`` to the first endpoint under its capacity."""
        load, owners = self._load, self._owners
        placed = self._total_load + 1
        scale = (1.0 + (self._epsilon or 0.0)) * placed / self._weight_sum
        for step in range(len(owners)):
            endpoint = owners[(index + step) % len(owners)]
            if load[endpoint.id] < math.ceil(scale * endpoint.weight):
                load[endpoint.id] += 1
                self._total_load = placed
                return endpoint
        raise AssertionError("unreachable: total capacity exceeds the in-flight count")

    def loads(self) -> dict[str, int]:
        """In-flight requests per endpoint id (bounded-load mode; zeros otherwise)."""
        return dict(self._load)

    def report(self, endpoint_id: str, success: bool, latency: float, now: float) -> None:
        """Ignored: the ring does not adapt to outcomes."""

    def cancel(self, endpoint: EndpointLike) -> None:
        """Close an unused ``pick``: the same as ``done`` here (the ring learns nothing)."""
        self.done(endpoint, True, 0.0, 0.0)

    def done(self, endpoint: EndpointLike, success: bool, latency: float, now: float) -> None:
        """Close a ``pick``: gives back the in-flight slot taken in bounded-load mode."""
        if self._epsilon is None:
            return
        count = self._load.get(endpoint.id, 0)
        if count > 0:  # an endpoint removed and re-added meanwhile starts at 0: never negative
            self._load[endpoint.id] = count - 1
            self._total_load -= 1
