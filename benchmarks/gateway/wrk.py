"""Reading ``wrk --latency`` output, and the Markdown table of a run. Pure.

wrk 4.x prints, among other lines::

    Latency Distribution
         50%  412.00us
         99%    2.31ms
      ...
    Requests/sec:  61234.56
    Non-2xx or 3xx responses: 12
    Socket errors: connect 0, read 0, write 0, timeout 3

``parse_wrk`` turns that into a ``WrkResult``; any missing field is an error
naming it, so a run that silently failed never becomes a number in a table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PCT = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_SOCKET = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.M)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles in milliseconds, error counts."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def parse_wrk(output: str) -> WrkResult:
    """Parse the text wrk printed with ``--latency``; ValueError names what is missing."""
    pct = {m.group(1): float(m.group(2)) * _UNITS_MS[m.group(3)] for m in _PCT.finditer(output)}
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    missing = [name for name, found in (("Requests/sec", rps), ("'N requests in'", total),
                                        ("50%", pct.get("50")), ("99%", pct.get("99")))
               if found is None]
    if missing:
        raise ValueError(f"wrk output lacks {', '.join(missing)} (was --latency given?):\n"
                         f"{output.strip()[:600]}")
    assert rps is not None and total is not None
    non2xx = _NON2XX.search(output)
    sock = _SOCKET.search(output)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        requests=int(total.group(1)),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def _ratio(value: float, base: float | None) -> str:
    return "—" if not base else f"{value / base:.2f}×"


def markdown_table(rows: Sequence[tuple[str, WrkResult]], *, nginx: str = "nginx",
                   peer: str = "aiohttp proxy") -> str:
    """Rows as a Markdown table with throughput ratios to ``nginx`` and to ``peer``."""
    by_name = dict(rows)
    base_nginx = by_name[nginx].rps if nginx in by_name else None
    base_peer = by_name[peer].rps if peer in by_name else None
    lines = [
        f"| target | req/s | p50 | p99 | vs {nginx} | vs {peer} | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms "
            f"| {_ratio(r.rps, base_nginx)} | {_ratio(r.rps, base_peer)} | {r.errors} |"
        )
    return "\n".join(lines)


__all__ = ["WrkResult", "markdown_table", "parse_wrk"]
