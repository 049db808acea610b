"""A tiny side-by-side harness: ours and a peer, interleaved, in one run.

The machine is shared and noisy, so each case runs ``ours`` and ``peer``
alternately ``repeat`` times and keeps the fastest round of each: noise only
ever makes a round slower. Results are reported as ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One measurement: our call against the call a Python user would otherwise write."""

    family: str  # "breaker", "retry", "rate limit", "balancer" ...
    name: str  # what is measured, e.g. "call() success, closed"
    ours: Callable[[], object]
    peer_name: str | None = None  # e.g. "pybreaker 1.4"
    peer: Callable[[], object] | None = None
    number: int = 20_000  # calls per round


@dataclass(frozen=True)
class Result:
    case: Case
    ours_ns: float
    peer_ns: float | None

    @property
    def speedup(self) -> float | None:
        """How many times faster ours is than the peer (peer time / our time)."""
        return None if self.peer_ns is None else self.peer_ns / self.ours_ns


def per_call_ns(fn: Callable[[], object], number: int) -> float:
    """Nanoseconds per call of ``fn`` over one round of ``number`` calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - start) / number


def measure(case: Case, repeat: int = 7) -> Result:
    """Run ours and the peer alternately; keep each one's fastest round."""
    per_call_ns(case.ours, max(1, case.number // 10))  # warm up
    if case.peer is not None:
        per_call_ns(case.peer, max(1, case.number // 10))
    ours: list[float] = []
    peer: list[float] = []
    for _ in range(repeat):
        ours.append(per_call_ns(case.ours, case.number))
        if case.peer is not None:
            peer.append(per_call_ns(case.peer, case.number))
    return Result(case, min(ours), min(peer) if peer else None)


def markdown_table(results: Iterable[Result]) -> str:
    """Results as a Markdown table, ratios first."""
    lines = [
        "| family | case | qanat | peer | peer time | speed-up |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in results:
        peer_time = f"{r.peer_ns / 1000:.2f} µs" if r.peer_ns is not None else "—"
        speedup = f"{r.speedup:.1f}×" if r.speedup is not None else "—"
        lines.append(
            f"| {r.case.family} | {r.case.name} | {r.ours_ns / 1000:.2f} µs "
            f"| {r.case.peer_name or '—'} | {peer_time} | {speedup} |"
        )
    return "\n".join(lines)
