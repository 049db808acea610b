"""Outlier detection: eject endpoints that fail more than their peers, for a while.

Envoy's passive health checking (``source/common/upstream/outlier_detection_impl.cc``,
``envoy.config.cluster.v3.OutlierDetection``), made pure: outcomes and time go in,
ejection decisions come out. A balancer never sees an ejected endpoint because
``apply`` leaves it out of the list the balancer is given::

    detector.record(endpoint.id, status, now)          # after every call
    detector.tick(now)                                  # often; sweeps every `interval`
    if detector.epoch(now) != seen:                     # the ejected set changed
        balancer.update(detector.apply(endpoints, now))
        seen = detector.epoch(now)

Thread-safety: one event loop; nothing here awaits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

from qanat.core.balance.base import EndpointLike
from qanat.core.outlier_settings import CallError, OutlierSettings, OutlierStats

E = TypeVar("E", bound=EndpointLike)


_AS_STATUS = {CallError.CONNECT_FAILURE: 503, CallError.RESET: 503, CallError.TIMEOUT: 504}


class _Host:
    __slots__ = ("backoff", "consecutive_5xx", "consecutive_gw", "ejected", "requests", "successes")

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gw = 0
        self.requests = 0  # in this interval
        self.successes = 0
        self.backoff = 0  # Envoy's eject_time_backoff: the ejection-time multiplier
        self.ejected = False  # ejected at some moment since the last sweep


class OutlierDetector:
    """Envoy's outlier detection over endpoint ids.

    - Consecutive 5xx (``consecutive_5xx``) and consecutive gateway failures
      (502/503/504, ``consecutive_gateway_failure``) eject at once, from
      ``record``; a non-5xx resets both counts, a non-gateway 5xx resets the
      gateway count.
    - Success rate: every ``interval``, hosts with at least
      ``success_rate_request_volume`` requests in it are compared when there
      are at least ``success_rate_minimum_hosts`` of them; those below
      ``mean - success_rate_stdev_factor * stdev`` (population stdev of the
      percentages) are ejected.
    - An ejection lasts ``min(base_ejection_time * multiplier, max_ejection_time)``;
      the multiplier rises by one per ejection (while ``multiplier * base <
      max + base``, as Envoy) and falls by one at every sweep that finds the
      host un-ejected and not ejected since the previous sweep.
    - Ejecting is refused when it would put more than ``max_ejection_percent``
      of hosts out, except that one host may always be ejected.
    - Un-ejection happens at the exact end time (Envoy waits for the next
      sweep); consecutive counts restart from zero then.

    Hosts are the ids given to ``update`` plus any id seen by ``record``.
    ``record`` is O(1); a sweep is O(hosts).
    """

    def __init__(self, settings: OutlierSettings | None = None, hosts: Iterable[str] = ()) -> None:
        self.settings = settings or OutlierSettings()
        self._hosts: dict[str, _Host] = {h: _Host() for h in hosts}
        self._until: dict[str, float] = {}  # ejected id -> end of its ejection
        self._next_expiry = math.inf
        self._next_sweep: float | None = None
        self._epoch = 0
        self._counts = dict.fromkeys(("5xx", "gateway", "success_rate", "overflow"), 0)
        self._sr: tuple[float, float] | None = None

    def update(self, endpoint_ids: Iterable[str]) -> None:
        """Set the hosts exactly: new ids start clean, departed ids are forgotten."""
        old = self._hosts
        self._hosts = {i: old.get(i) or _Host() for i in endpoint_ids}
        gone = [i for i in self._until if i not in self._hosts]
        for i in gone:
            del self._until[i]
        if gone:
            self._epoch += 1
            self._next_expiry = min(self._until.values(), default=math.inf)

    def record(self, endpoint_id: str, outcome: int | str, now: float) -> bool:
        """Record one call's outcome: an HTTP status or a ``CallError``. True if it ejected."""
        status = outcome if isinstance(outcome, int) else _AS_STATUS[_call_error(outcome)]
        host = self._hosts.get(endpoint_id)
        if host is None:
            host = self._hosts[endpoint_id] = _Host()
        if self._next_sweep is None:
            self._next_sweep = now + self.settings.interval
        if endpoint_id in self._until:
            self._expire(now)
            if endpoint_id in self._until:
                return False  # calls in flight when it was ejected say nothing new
        host.requests += 1
        if status < 500:
            host.successes += 1
            host.consecutive_5xx = host.consecutive_gw = 0
            return False
        s = self.settings
        host.consecutive_gw = host.consecutive_gw + 1 if status in (502, 503, 504) else 0
        host.consecutive_5xx += 1
        if host.consecutive_5xx == s.consecutive_5xx:
            host.consecutive_5xx = 0
            return self._eject(endpoint_id, now, "5xx")
        if host.consecutive_gw == s.consecutive_gateway_failure:
            host.consecutive_gw = 0
            return self._eject(endpoint_id, now, "gateway")
        return False

    def tick(self, now: float) -> list[str]:
        """Sweep when ``interval`` has passed since the last sweep; return ids it ejected.

        Cheap to call more often: between sweeps it only un-ejects hosts whose time is up.
        """
        self._expire(now)
        if self._next_sweep is None:
            self._next_sweep = now + self.settings.interval
        if now < self._next_sweep:
            return []
        self._next_sweep = now + self.settings.interval
        for host_id, host in self._hosts.items():
            if host_id in self._until:
                continue  # still ejected: the multiplier stays
            if not host.ejected and host.backoff:
                host.backoff -= 1  # a whole interval without an ejection
            host.ejected = False
        ejected = self._success_rate_sweep(now)
        for host in self._hosts.values():
            host.requests = host.successes = 0
        return ejected

    def _success_rate_sweep(self, now: float) -> list[str]:
        s = self.settings
        self._sr = None
        rates = {
            host_id: 100.0 * host.successes / host.requests
            for host_id, host in self._hosts.items()
            if host_id not in self._until and host.requests >= s.success_rate_request_volume
        }
        if len(rates) < s.success_rate_minimum_hosts:
            return []
        mean = sum(rates.values()) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates.values()) / len(rates))
        threshold = mean - s.success_rate_stdev_factor * stdev
        self._sr = (mean, threshold)
        outliers = [i for i, rate in rates.items() if rate < threshold]
        return [i for i in outliers if self._eject(i, now, "success_rate")]

    def _eject(self, endpoint_id: str, now: float, rule: str) -> bool:
        s = self.settings
        self._expire(now)
        ejected, total = len(self._until), len(self._hosts)
        allowed = s.max_ejection_percent > 0 and (
            ejected == 0 or 100.0 * (ejected + 1) / total <= s.max_ejection_percent
        )
        if not allowed:
            self._counts["overflow"] += 1
            return False
        host = self._hosts[endpoint_id]
        cap = max(s.max_ejection_time, s.base_ejection_time)
        if host.backoff * s.base_ejection_time < cap + s.base_ejection_time:
            host.backoff += 1
        until = now + min(s.base_ejection_time * host.backoff, cap)
        self._until[endpoint_id] = until
        self._next_expiry = min(self._next_expiry, until)
        host.ejected = True
        self._counts[rule] += 1
        self._epoch += 1
        return True

    def _expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        for host_id in [i for i, until in self._until.items() if until <= now]:
            del self._until[host_id]
            host = self._hosts[host_id]
            host.consecutive_5xx = host.consecutive_gw = 0  # a fresh start, as Envoy
            self._epoch += 1
        self._next_expiry = min(self._until.values(), default=math.inf)

    def is_ejected(self, endpoint_id: str, now: float) -> bool:
        """Whether ``endpoint_id`` is ejected at ``now``."""
        self._expire(now)
        return endpoint_id in self._until

    def ejected(self, now: float) -> set[str]:
        """The ids ejected at ``now``."""
        self._expire(now)
        return set(self._until)

    def epoch(self, now: float) -> int:
        """A number that changes whenever the ejected set changes; O(1) between changes."""
        self._expire(now)
        return self._epoch

    def apply(self, endpoints: Sequence[E], now: float) -> list[E]:
        """``endpoints`` without the ejected ones: what a balancer should be given."""
        self._expire(now)
        until = self._until
        return [e for e in endpoints if e.id not in until] if until else list(endpoints)

    def stats(self) -> OutlierStats:
        """A snapshot of ejections, multipliers and counters."""
        c = self._counts
        mean, threshold = self._sr if self._sr is not None else (None, None)
        return OutlierStats(
            hosts=len(self._hosts),
            ejected=dict(self._until),
            multipliers={i: h.backoff for i, h in self._hosts.items() if h.backoff},
            ejections_total=c["5xx"] + c["gateway"] + c["success_rate"],
            ejections_consecutive_5xx=c["5xx"],
            ejections_consecutive_gateway_failure=c["gateway"],
            ejections_success_rate=c["success_rate"],
            ejections_overflow=c["overflow"],
            success_rate_mean=mean,
            success_rate_threshold=threshold,
        )


def _call_error(outcome: str) -> CallError:
    try:
        return CallError(outcome)
    except ValueError:
        allowed = ", ".join(e.value for e in CallError)
        raise ValueError(
            f"unknown call outcome {outcome!r}: pass an HTTP status (int) or one of {allowed}"
        ) from None


__all__ = ["CallError", "OutlierDetector", "OutlierSettings", "OutlierStats"]
