"""The results of ``benchmarks/discovery.py`` and their Markdown report."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Latencies:
    watcher: str  # "another process" or "same process"
    delays: list[float]  # seconds from the write's completion to the watcher's snapshot
    writes: list[float]  # seconds each write took (delay + write = from the write's start)
    missed: int

    @property
    def since_start(self) -> list[float]:
        return [d + w for d, w in zip(self.delays, self.writes, strict=True)]


@dataclass(frozen=True)
class Churn:
    instances: int
    processes: int
    register_s: float  # first registration started -> last one returned
    all_seen_s: float  # first registration started -> watcher saw all
    leave_s: float
    none_seen_s: float


@dataclass(frozen=True)
class Scale:
    """SQLite at scale: renewal cost by lease count, and what a watcher pays per change."""

    renewal_us: dict[int, float]  # leases in the file -> µs per renewal transaction
    instances: int  # size of the watched service
    changes: int  # changes per phase
    idle_ms_per_s: float  # watcher CPU while nothing changes, per second
    other_ms: float  # watcher CPU per change to another service (idle subtracted)
    own_ms: float  # watcher CPU per change to the watched service (idle subtracted)
    own_seen: int  # snapshots the watcher yielded for the ``changes`` own changes


@dataclass(frozen=True)
class BackendResult:
    name: str
    watch: list[Latencies]
    lookups: tuple[float, float]
    churn: Churn
    scale: Scale | None = None


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 1]); NaN for no values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def spread(seconds: Sequence[float]) -> str:
    """``p50 / p99 / max`` in milliseconds."""
    p50, p99, top = (pct(seconds, q) * 1000 for q in (0.5, 0.99, 1.0))
    return f"{p50:.1f} / {p99:.1f} / {top:.1f} ms"


def report(
    results: list[BackendResult], command: str, load: tuple[float, ...], end: tuple[float, ...]
) -> str:
    """The results as Markdown tables, headed by the date, the load and the command."""
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"Discovery, {date}; {os.cpu_count()} cores; load average (1, 5, 15 min) "
        f"{' '.join(f'{x:.2f}' for x in load)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in end)} at the end. Command: `{command}`",
        "",
        "| backend | watcher | changes seen (missed) | after the write returned: p50 / p99 / max "
        "| after the write began: p50 / p99 / max | write p50 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for w in r.watch:
            out.append(
                f"| {r.name} | {w.watcher} | {len(w.delays)} ({w.missed}) | {spread(w.delays)} "
                f"| {spread(w.since_start)} | {pct(w.writes, 0.5) * 1000:.1f} ms |"
            )
    out += ["", "| backend | `DiscoveryCache.instances()` | `registry.discover()` | ratio |",
            "|---|---:|---:|---:|"]  # fmt: skip
    for r in results:
        cached, raw = r.lookups
        out.append(f"| {r.name} | {cached:,.0f}/s | {raw:,.0f}/s | {cached / raw:,.0f}× |")
    out += [
        "",
        "| backend | instances (processes) | register all | registrations/s | watcher saw all "
        "| deregister all | deregistrations/s | watcher saw none |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.churn
        out.append(
            f"| {r.name} | {c.instances} ({c.processes}) | {c.register_s:.2f} s "
            f"| {c.instances / c.register_s:,.0f} | {c.all_seen_s:.2f} s | {c.leave_s:.2f} s "
            f"| {c.instances / c.leave_s:,.0f} | {c.none_seen_s:.2f} s |"
        )
    out += scale_tables([r.scale for r in results if r.scale is not None])
    return "\n".join(out)


def scale_tables(scales: list[Scale]) -> list[str]:
    """The SQLite-at-scale tables (nothing when the phase did not run)."""
    out: list[str] = []
    for s in scales:
        counts = sorted(s.renewal_us)
        out += [
            "",
            "| SQLite leases in the file | " + " | ".join(f"{n:,}" for n in counts) + " |",
            "|---|" + "---:|" * len(counts),
            "| one renewal transaction | "
            + " | ".join(f"{s.renewal_us[n]:.0f} µs" for n in counts)
            + " |",
            "",
            "| SQLite watcher of a service of | idle | per change to another service "
            "| per change to its own service (snapshots seen) |",
            "|---|---:|---:|---:|",
            f"| {s.instances:,} instances | {s.idle_ms_per_s:.1f} ms CPU/s | {s.other_ms:.2f} ms "
            f"CPU | {s.own_ms:.2f} ms CPU ({s.own_seen}/{s.changes}) |",
        ]
    return out
