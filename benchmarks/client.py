"""The resilient ``ServiceClient``'s overhead per call, against bare transports, in one run.

Run: ``.venv/bin/python benchmarks/client.py`` (``--quick`` for a smoke run,
``-n`` to change the request count, ``--profile`` to print a cProfile of the
client's sequential run instead). It starts ``benchmarks/upstream.py`` as a
subprocess on a free port, registers it in a ``MemoryRegistry``, and sends the
same N GETs sequentially and with 32 concurrent workers, reading every body,
through:

(a) ``ServiceClient`` with default settings (discovery cache, p2c balancer,
    per-instance breaker, outlier detection, retry budget, deadline header,
    request id, ``traceparent`` from the no-op tracer);
(b) a bare ``qanat.http.HttpPool`` request (what the client stands on);
(c) ``aiohttp.ClientSession``; (d) ``httpx.AsyncClient``.

Clients run alternately for ``--rounds`` rounds on uvloop and each keeps its
best round (noise on a shared machine only ever slows a round down). Prints
a Markdown table: requests/s and µs per call (wall clock), this process's
CPU µs per call (steadier on a loaded machine: the upstream's work and time
spent descheduled are not in it), and the client's CPU overhead over the
bare pool (µs per call and as a ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

from qanat.backends.memory import MemoryRegistry
from qanat.http import HttpPool
from qanat.ports import Instance
from qanat.runtime.client import ServiceClient
from qanat.runtime.discovery import DiscoveryCache

HOST = "127.0.0.1"
CONCURRENCY = 32
CLIENT = "qanat ServiceClient"
POOL = "qanat HttpPool"
Fetch = Callable[[], Awaitable[bytes]]


def start_upstream() -> tuple[subprocess.Popen[str], int]:
    """Start benchmarks/upstream.py on a free port; wait for its 'listening' line."""
    script = Path(__file__).with_name("upstream.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server is listening
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"upstream did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


async def run(fetch: Fetch, n: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, CPU µs per request) for ``n`` fetches over ``concurrency`` workers.

    CPU time is this process's (``time.process_time``): the upstream runs in
    another process, and time spent descheduled on a loaded machine is not
    counted, so it is the steadier measure of what a client costs.
    """
    per_worker = n // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await fetch()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = per_worker * concurrency
    cpu_us = (time.process_time() - cpu) / done * 1e6
    return done / (time.perf_counter() - start), cpu_us


async def clients(port: int) -> tuple[dict[str, Fetch], Callable[[], Awaitable[None]]]:
    """The four fetches of one GET / and a function that closes them all."""
    registry = MemoryRegistry()
    await registry.register(
        Instance(id="upstream-0", service="upstream", address=HOST, port=port)
    )
    discovery = DiscoveryCache(registry)
    await discovery.wait_ready("upstream")
    client_pool = HttpPool(max_connections_per_host=256)
    client = ServiceClient("upstream", discovery=discovery, pool=client_pool)

    async def with_client() -> bytes:
        return (await client.get("/")).content

    pool = HttpPool(max_connections_per_host=256)
    headers = [(b"host", f"{HOST}:{port}".encode()), (b"user-agent", b"bench")]

    async def with_pool() -> bytes:
        resp = await pool.request(b"GET", HOST, port, b"/", headers, timeout=10.0)
        return await resp.read()

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    url = f"http://{HOST}:{port}/"

    async def with_aiohttp() -> bytes:
        async with session.get(url, headers={"user-agent": "bench"}) as resp:
            return await resp.read()

    hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=256))

    async def with_httpx() -> bytes:
        return (await hx.get(url, headers={"user-agent": "bench"})).content

    async def close() -> None:
        await client_pool.aclose()
        await pool.aclose()
        await session.close()
        await hx.aclose()
        await discovery.close()
        await registry.close()

    fetches: dict[str, Fetch] = {
        CLIENT: with_client,
        POOL: with_pool,
        f"aiohttp {aiohttp.__version__}": with_aiohttp,
        f"httpx {httpx.__version__}": with_httpx,
    }
    return fetches, close


Best = dict[tuple[str, int], tuple[float, float]]


async def measure(port: int, n: int, rounds: int) -> Best:
    """Best requests/s and CPU µs of each (client, concurrency) over interleaved rounds."""
    fetches, close = await clients(port)
    best: Best = {}
    try:
        for fetch in fetches.values():  # warm up: connections, caches
            assert await fetch() == b"Hello, world!"
            await run(fetch, CONCURRENCY * 10, CONCURRENCY)
        for _ in range(rounds):
            for concurrency in (1, CONCURRENCY):
                for name, fetch in fetches.items():
                    rps, cpu = await run(fetch, n, concurrency)
                    key = (name, concurrency)
                    old_rps, old_cpu = best.get(key, (0.0, float("inf")))
                    best[key] = (max(old_rps, rps), min(old_cpu, cpu))
                    print(f"{name:>22} c={concurrency:<3} {rps:10.0f} req/s {cpu:7.1f} µs CPU",
                          file=sys.stderr)
    finally:
        await close()
    return best


async def profile(port: int, n: int) -> None:
    """cProfile of ``n`` sequential calls through the client, top entries by own time."""
    fetches, close = await clients(port)
    try:
        fetch = fetches[CLIENT]
        await run(fetch, 1000, 1)
        profiler = cProfile.Profile()
        profiler.enable()
        await run(fetch, n, 1)
        profiler.disable()
    finally:
        await close()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def table(best: Best, n: int) -> str:
    """Requests/s and µs per call (wall), CPU µs per call, and the overhead over the bare pool."""
    lines = [
        f"| case ({n} GETs, uvloop) | client | requests/s | µs per call | CPU µs per call "
        "| CPU vs bare pool |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for concurrency in (1, CONCURRENCY):
        case = "sequential" if concurrency == 1 else f"concurrency {concurrency}"
        pool_cpu = best[(POOL, concurrency)][1]
        for (name, c), (rps, cpu) in best.items():
            if c != concurrency:
                continue
            overhead = f"{cpu - pool_cpu:+.1f} µs ({cpu / pool_cpu:.2f}×)"
            versus = "—" if name == POOL else overhead
            lines.append(
                f"| {case} | {name} | {rps:,.0f} | {1e6 / rps:.1f} | {cpu:.1f} | {versus} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="requests per case and client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: n=640, 1 round")
    parser.add_argument("--profile", action="store_true", help="profile the client instead")
    args = parser.parse_args()
    n, rounds = (640, 1) if args.quick else (args.n, args.rounds)
    proc, port = start_upstream()
    try:
        if args.profile:
            uvloop.run(profile(port, n))
            return
        best = uvloop.run(measure(port, n, rounds))
    finally:
        proc.terminate()
        proc.wait()
    print(table(best, n))


if __name__ == "__main__":
    main()
