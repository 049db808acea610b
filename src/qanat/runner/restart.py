"""When to restart a crashed instance: exponential backoff that forgives stability.

Pure: the supervisor passes ``now``. The delay doubles with each crash in a
row (0.5 s, 1 s, 2 s ... capped at 30 s), like systemd's and Kubernetes'
CrashLoopBackOff; an instance that stayed up for ``stable_after`` seconds
starts again from the base delay.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartSettings:
    base: float = 0.5  # first restart delay, seconds
    cap: float = 30.0  # longest delay between restarts
    stable_after: float = 60.0  # up this long: the crash streak is forgiven


class RestartBackoff:
    """Tracks one instance's crash streak and says how long to wait before restarting."""

    __slots__ = ("_settings", "_started_at", "crashes")

    def __init__(self, settings: RestartSettings = RestartSettings()) -> None:
        self._settings = settings
        self._started_at: float | None = None
        self.crashes = 0

    def started(self, now: float) -> None:
        self._started_at = now

    def crashed(self, now: float) -> float:
        """Record a crash at ``now``; return the delay before the next start."""
        s = self._settings
        if self._started_at is not None and now - self._started_at >= s.stable_after:
            self.crashes = 0
        self.crashes += 1
        return min(s.cap, s.base * 2.0 ** (self.crashes - 1))
