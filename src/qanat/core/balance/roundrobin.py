"""Plain round robin: each eligible endpoint in turn, weights ignored (except 0 = drained)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic

from qanat.core.balance.base import E, eligible
from qanat.core.balance.nofeedback import NoFeedback


class RoundRobin(NoFeedback, Generic[E]):
    """Cycle through the eligible endpoints in the order ``update`` gave them.

    ``pick`` is O(1). After ``update`` the rotation continues after the last
    endpoint picked when it is still present, so a discovery refresh does not
    restart the cycle and hit the first endpoint twice.
    """

    __slots__ = ("_endpoints", "_next")

    def __init__(self, endpoints: Sequence[E] = ()) -> None:
        self._endpoints: list[E] = []
        self._next = 0
        self.update(endpoints)

    def update(self, endpoints: Sequence[E]) -> None:
        """Replace the endpoint set, keeping the place in the rotation."""
        new = eligible(endpoints, "RoundRobin.update")
        last = self._endpoints[self._next - 1].id if self._endpoints else None
        self._next = 0
        for index, endpoint in enumerate(new):
            if endpoint.id == last:
                self._next = (index + 1) % len(new)
                break
        self._endpoints = new

    def pick(self, key: str | None = None) -> E | None:
        """The next endpoint in turn; ``key`` is ignored. O(1)."""
        endpoints = self._endpoints
        if not endpoints:
            return None
        index = self._next
        self._next = index + 1 if index + 1 < len(endpoints) else 0
        return endpoints[index]
