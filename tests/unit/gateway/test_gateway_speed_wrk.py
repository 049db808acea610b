"""The gateway benchmark reads wrk's output faithfully, and refuses output it cannot read."""

from __future__ import annotations

import pytest
from benchmarks.gateway.wrk import WrkResult, markdown_table, parse_wrk
from hypothesis import given
from hypothesis import strategies as st

SAMPLE = """\
Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.21ms    1.10ms  30.12ms   91.00%
    Req/Sec     7.70k   412.33     8.50k    70.00%
  Latency Distribution
     50%  {p50}
     75%    4.51ms
     90%    5.02ms
     99%  {p99}
  153201 requests in 10.00s, 21.04MB read
{extra}Requests/sec:  {rps}
Transfer/sec:      2.10MB
"""


def _render(value_ms: float) -> str:
    """How wrk prints a latency: us below 1 ms, ms below 1 s, else s."""
    if value_ms < 1:
        return f"{value_ms * 1000:.2f}us"
    if value_ms < 1000:
        return f"{value_ms:.2f}ms"
    return f"{value_ms / 1000:.2f}s"


latencies = st.floats(min_value=0.01, max_value=9000, allow_nan=False)


@given(latencies, latencies, st.floats(min_value=1, max_value=1e6), st.integers(0, 10**6),
       st.integers(0, 999))
def test_parse_reads_back_what_wrk_printed(
    p50: float, p99: float, rps: float, non2xx: int, timeouts: int
) -> None:
    """Percentiles in any unit, throughput and error counts come back as printed."""
    extra = (f"  Socket errors: connect 0, read 1, write 0, timeout {timeouts}\n"
             f"  Non-2xx or 3xx responses: {non2xx}\n")
    text = SAMPLE.format(p50=_render(p50), p99=_render(p99), rps=f"{rps:.2f}", extra=extra)
    r = parse_wrk(text)
    assert r.p50_ms == pytest.approx(p50, rel=0.01, abs=0.01)
    assert r.p99_ms == pytest.approx(p99, rel=0.01, abs=0.01)
    assert r.rps == pytest.approx(rps, abs=0.01)
    assert (r.requests, r.non_2xx, r.socket_errors) == (153201, non2xx, 1 + timeouts)


def test_output_without_latency_distribution_is_refused() -> None:
    """A run without --latency (or a failed run) is an error, never a number."""
    text = SAMPLE.format(p50="1ms", p99="2ms", rps="10", extra="")
    text = "\n".join(line for line in text.splitlines() if "%  " not in line)
    with pytest.raises(ValueError, match="50%"):
        parse_wrk(text)


def test_table_gives_ratios_to_both_references() -> None:
    """Each row's throughput is divided by nginx's and by the aiohttp proxy's."""
    def res(rps: float) -> WrkResult:
        return WrkResult(rps, 1.0, 2.0, 100, 0, 0)

    table = markdown_table([("nginx", res(40_000)), ("aiohttp proxy", res(5_000)),
                            ("qanat plain", res(15_000))])
    row = next(line for line in table.splitlines() if line.startswith("| qanat plain"))
    assert f"{15_000 / 40_000:.2f}×" in row and f"{15_000 / 5_000:.2f}×" in row
