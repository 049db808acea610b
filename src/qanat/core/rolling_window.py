"""A rolling window of time buckets counting events and hits, for the adaptive throttle.

``RollingWindow`` keeps a count and a sum of hits over the last ``size``
buckets of ``width`` seconds each, as go-zero's ``collection.RollingWindow``
(used there by the Google SRE breaker). Pure: time is passed in, nothing
sleeps or locks. Also importable from ``qanat.core.window``.
"""

from __future__ import annotations

import math

from qanat.errors import ConfigError


class RollingWindow:
    """A count of events and of hits over the last ``size`` buckets of ``width`` seconds.

    Buckets are aligned to multiples of ``width`` on the caller's clock, so the
    window covers between ``(size - 1) * width`` and ``size * width`` seconds of
    history. Totals are kept incrementally: ``add`` and ``totals`` are O(1)
    except when the window moves, which costs one step per bucket passed (at
    most ``size``). Counts are integers, so they never drift. While the clock
    stays in the newest bucket (``now <= last``) nothing moves: one comparison.
    """

    __slots__ = ("_counts", "_hits", "_index", "_last", "_slot", "_total_count", "_total_hits",
                 "size", "width")

    def __init__(self, size: int, width: float) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"must be a whole number of buckets >= 1, got {size!r}",
                              source="RollingWindow.size")
        if not (isinstance(width, int | float) and math.isfinite(width) and width > 0):
            raise ConfigError(f"must be a finite number of seconds > 0, got {width!r}",
                              source="RollingWindow.width")
        self.size = size
        self.width = float(width)
        self._counts = [0] * size
        self._hits = [0] * size
        self._total_count = 0
        self._total_hits = 0
        self._slot: int | None = None  # absolute bucket number of the newest bucket
        self._index = 0  # its index in the lists
        self._last = -math.inf  # the last clock time in the newest bucket

    def _advance(self, now: float) -> None:
        """Roll the window to the bucket that holds ``now`` (called once ``now > _last``)."""
        width = self.width
        slot = int(now // width)
        last = self._slot
        if last is None or slot - last >= self.size:
            self._counts = [0] * self.size
            self._hits = [0] * self.size
            self._total_count = self._total_hits = 0
        elif slot > last:
            counts, hits = self._counts, self._hits
            for step in range(last + 1, slot + 1):
                i = step % self.size
                self._total_count -= counts[i]
                self._total_hits -= hits[i]
                counts[i] = hits[i] = 0
        else:
            # A clock that steps back stays in the newest bucket, not rewriting history.
            slot = last
        self._slot = slot
        self._index = slot % self.size
        end = (slot + 1) * width
        # Float rounding may put (slot + 1) * width itself in bucket slot + 1: step back,
        # so that `now <= _last` always means "still in the newest bucket".
        while int(end // width) > slot:
            end = math.nextafter(end, -math.inf)
        self._last = end

    def add(self, now: float, hit: bool) -> None:
        """Count one event at ``now``; ``hit`` says whether it also counts as a hit."""
        if now > self._last:
            self._advance(now)
        i = self._index
        self._counts[i] += 1
        self._total_count += 1
        if hit:
            self._hits[i] += 1
            self._total_hits += 1

    def totals(self, now: float) -> tuple[int, int]:
        """``(events, hits)`` in the window that ends at ``now``."""
        if now > self._last:
            self._advance(now)
        return self._total_count, self._total_hits


__all__ = ["RollingWindow"]
