"""What every qanat rate limiter shares: the ``Decision``, bounded keyed state, settling delays.

Limiters are pure: ``allow(key, now, n=1)`` takes the time and returns a
``Decision``; nothing sleeps, nothing reads a clock. Each limiter keeps one
small state per key in an LRU-ordered map of at most ``max_keys`` entries;
see ``KeyedState``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

from qanat.errors import ConfigError

S = TypeVar("S")

#: Default bound on the number of keys a limiter remembers (~100-200 bytes each).
DEFAULT_MAX_KEYS = 100_000


class Decision(NamedTuple):
    """The answer to ``allow``: enough to set ``Retry-After`` and IETF RateLimit headers.

    ``allowed``: whether the ``n`` permits were granted (and consumed).
    ``remaining``: whole permits still available right now, after this call.
    ``limit``: the burst size (the most permits ever available at once).
    ``reset_after``: seconds until the key is back to a full ``limit``.
    ``retry_after``: 0 when allowed; otherwise the seconds after which the same
    request is allowed, exactly: ``allow(key, now + retry_after, n)`` succeeds
    if nothing else consumed permits in between, and no earlier time does.
    """

    allowed: bool
    remaining: int
    limit: int
    reset_after: float
    retry_after: float


#: ``new(Decision, (allowed, remaining, limit, reset_after, retry_after))``: builds a
#: Decision without the Python-level ``__new__`` frame (half the cost on the hot path).
new: Callable[[type[Decision], tuple[bool, int, int, float, float]], Decision]
new = tuple.__new__


def settle(now: float, ready: float) -> float:
    """The smallest float ``d >= 0`` (to the nearest ulp) with ``now + d >= ready`` in floats.

    ``ready - now`` can be one rounding short, so a caller that waits exactly
    ``retry_after`` would be refused again; this nudges it up until it is not.
    """
    d = ready - now
    if d <= 0:
        return 0.0
    while now + d < ready:
        d += max(math.ulp(d), math.ulp(ready))
    return d


def check_positive(value: float, name: str, source: str) -> None:
    """Raise ConfigError unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}", source=source)


def check_n(n: int, limit: int) -> None:
    """Refuse a request for more permits than the limiter can ever hold."""
    if n > limit or n < 1:
        raise ValueError(f"n={n} can never be allowed: it must be between 1 and the limit {limit}")


class KeyedState(Generic[S]):
    """Per-key state with bounded memory: at most ``max_keys`` keys, LRU order.

    Subclasses touch a key with ``self._keys.move_to_end(key)``; when a *new*
    key arrives, ``_make_room`` first drops up to two least-recently-used keys
    that are idle (whose state has returned to full, so forgetting them changes
    no answer), then, if still at ``max_keys``, the least recently used key
    (forgetting its partial state: that client gets a fresh limit). O(1) per
    call.
    """

    __slots__ = ("_keys", "_max_keys")

    def __init__(self, max_keys: int) -> None:
        if isinstance(max_keys, bool) or not (isinstance(max_keys, int) and max_keys >= 1):
            raise ConfigError(
                f"max_keys must be an integer >= 1, got {max_keys!r}",
                source=f"{type(self).__name__}.max_keys",
            )
        self._keys: OrderedDict[Hashable, S] = OrderedDict()
        self._max_keys = max_keys

    def _idle(self, key: Hashable, now: float) -> bool:
        """True when ``key``'s state has returned to full at ``now`` (so it can be forgotten).

        It takes the key, not the state: a subclass's state type is concrete (GCRA's
        is a float) and mypyc compiles an override only with the base's argument types.
        """
        raise NotImplementedError

    def allow(self, key: Hashable, now: float, n: int = 1) -> Decision:
        """Grant ``n`` permits to ``key`` at ``now`` if it has them: the limiter's decision."""
        raise NotImplementedError

    def _make_room(self, now: float) -> None:
        keys = self._keys
        for _ in range(2):
            if not keys:
                return
            oldest = next(iter(keys))
            if not self._idle(oldest, now):
                break
            del keys[oldest]
        if len(keys) >= self._max_keys:
            keys.popitem(last=False)

    def __len__(self) -> int:
        """The number of keys currently remembered (never more than ``max_keys``)."""
        return len(self._keys)

    def forget(self, key: Hashable) -> None:
        """Drop ``key``'s state: its next request starts from a full limit."""
        self._keys.pop(key, None)

    def state(self, key: Hashable) -> Any:
        """The raw state kept for ``key`` (None if unknown); for tests and debugging."""
        return self._keys.get(key)


__all__ = [
    "DEFAULT_MAX_KEYS",
    "Decision",
    "KeyedState",
    "check_n",
    "check_positive",
    "new",
    "settle",
]
