"""Weighted balancers: nginx's smooth weighted round robin, and weighted random."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from math import gcd
from typing import Generic

from qanat.core.balance.base import E, eligible, uniform
from qanat.core.balance.nofeedback import NoFeedback
from qanat.errors import ConfigError

DEFAULT_MAX_CYCLE = 4096


def _step(current: list[int], weights: list[int], total: int) -> tuple[list[int], int]:
    """One pick of nginx's ``ngx_http_upstream_get_peer``: O(n).

    Every peer's current weight grows by its weight; the largest wins (the
    first one on a tie, as nginx's strict ``>`` does) and loses the total.
    """
    current = [c + w for c, w in zip(current, weights, strict=True)]
    best = current.index(max(current))
    current[best] -= total
    return current, best


def _run(start: list[int], weights: list[int], total: int, max_len: int) -> tuple[list[int], int]:
    """The picks from state ``start``, as ``(sequence, loop)``: a prefix, then a cycle.

    ``sequence[loop:]`` repeats forever. From the all-zero state the cycle
    starts at once and is ``sum(weights) / gcd(weights)`` long (every peer
    gets exactly its share in it); from a state kept across ``update`` a
    short prefix can come first. Found by running two copies ``period``
    steps apart until their states meet. Returns ``([], 0)`` when the
    sequence would exceed ``max_len``. Cost O((prefix + period) * n).
    """
    period = total // gcd(*weights)
    if period > max_len:
        return [], 0
    ahead, sequence = list(start), []
    for _ in range(period):
        ahead, best = _step(ahead, weights, total)
        sequence.append(best)
    behind = list(start)
    loop = 0
    while ahead != behind:
        if len(sequence) >= max_len:
            return [], 0
        ahead, best = _step(ahead, weights, total)
        sequence.append(best)
        behind, _ = _step(behind, weights, total)
        loop += 1
    return sequence, loop


class SmoothWeightedRoundRobin(NoFeedback, Generic[E]):
    """nginx's smooth weighted round robin (``ngx_http_upstream_round_robin.c``).

    Produces nginx's exact sequence: weights a=5, b=1, c=1 give
    ``a a b a c a a`` and repeat; within every cycle of
    ``sum(weights) / gcd(weights)`` picks each endpoint is picked exactly
    ``weight / gcd`` times, spread out rather than in bursts.

    nginx scans every peer on every pick (O(n)). Here ``update`` runs nginx's
    loop once for a whole cycle and ``pick`` walks the stored sequence: O(1).
    ``max_cycle`` bounds that sequence (default 4096 picks). ``update`` costs
    O((cycle + current position) * n): about 3 ms for 100 endpoints with
    weights 1-10, up to about 80 ms at the bound. Beyond it, picks fall back
    to nginx's O(n) loop, with the same sequence.

    ``update`` keeps each staying endpoint's current weight (as nginx keeps
    ``current_weight``); new endpoints start at 0. nginx's failure-driven
    ``effective_weight`` is left out: failing endpoints are the outlier
    detector's business (``qanat.core.outlier``), and it keeps the sequence exact.
    """

    __slots__ = ("_current", "_endpoints", "_loop", "_max_cycle", "_pos", "_seq", "_weights")

    def __init__(self, endpoints: Sequence[E] = (), *, max_cycle: int = DEFAULT_MAX_CYCLE) -> None:
        if max_cycle < 1:
            raise ConfigError(
                f"max_cycle must be >= 1, got {max_cycle}", source="SmoothWeightedRoundRobin"
            )
        self._max_cycle = max_cycle
        self._endpoints: list[E] = []
        self._weights: list[int] = []
        self._current: list[int] = []  # state at the start of _seq (or live state)
        self._seq: list[E] = []
        self._loop = 0
        self._pos = 0
        self.update(endpoints)

    def current_weights(self) -> dict[str, int]:
        """Each endpoint's nginx ``current_weight`` now, by id (for tests and debugging)."""
        return dict(zip((e.id for e in self._endpoints), self._state_now(), strict=True))

    def _state_now(self) -> list[int]:
        if not self._seq:
            return list(self._current)  # live mode: the state is kept as it goes
        state, total = list(self._current), sum(self._weights)
        for _ in range(self._pos):
            state, _ = _step(state, self._weights, total)
        return state

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set; staying endpoints keep their current weight."""
        new = eligible(endpoints, "SmoothWeightedRoundRobin.update")
        kept = self.current_weights()
        self._endpoints = new
        self._weights = [e.weight for e in new]
        self._current = [kept.get(e.id, 0) for e in new]
        self._pos = 0
        if not new:
            self._seq, self._loop = [], 0
            return
        order, self._loop = _run(self._current, self._weights, sum(self._weights), self._max_cycle)
        self._seq = [new[i] for i in order]

    def pick(self, key: str | None = None) -> E | None:
        """The next endpoint of nginx's sequence; ``key`` is ignored. O(1), or O(n) live."""
        seq = self._seq
        if seq:
            pos = self._pos
            self._pos = pos + 1 if pos + 1 < len(seq) else self._loop
            return seq[pos]
        if not self._endpoints:
            return None
        self._current, best = _step(self._current, self._weights, sum(self._weights))
        return self._endpoints[best]


class WeightedRandom(NoFeedback, Generic[E]):
    """Pick at random with probability weight / total weight.

    ``pick`` is O(log n): one uniform draw and a binary search over the
    cumulative weights. Stateless between picks, so ``update`` has nothing to
    keep. ``rng`` makes it deterministic in tests.
    """

    __slots__ = ("_cumulative", "_endpoints", "_random", "_total")

    def __init__(self, endpoints: Sequence[E] = (), *, rng: random.Random | None = None) -> None:
        self._random = uniform(rng)
        self._endpoints: list[E] = []
        self._cumulative: list[int] = []
        self._total = 0
        self.update(endpoints)

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set."""
        self._endpoints = eligible(endpoints, "WeightedRandom.update")
        self._cumulative = list(accumulate(e.weight for e in self._endpoints))
        self._total = self._cumulative[-1] if self._cumulative else 0

    def pick(self, key: str | None = None) -> E | None:
        """A random endpoint, weighted; ``key`` is ignored. O(log n)."""
        if not self._total:
            return None
        return self._endpoints[bisect_right(self._cumulative, self._random() * self._total)]
