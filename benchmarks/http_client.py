"""qanat's pooled HTTP/1.1 client against aiohttp and httpx, in one run, on uvloop.

Run: ``.venv/bin/python benchmarks/http_client.py`` (``--quick`` for a smoke
run, ``-n`` to change the request count). It starts ``benchmarks/upstream.py``
as a subprocess on a free port, then for each client sends the same N GET
requests sequentially and N requests with 32 concurrent workers, reading
every body. Clients run alternately for ``--rounds`` rounds and keep their
best round (noise on a shared machine only ever slows a round down). Prints a
Markdown table of requests/s and how many times faster qanat is.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

from qanat.http import HttpPool

HOST = "127.0.0.1"
CONCURRENCY = 32
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


async def run(fetch: Fetch, n: int, concurrency: int) -> float:
    """Requests per second for ``n`` fetches spread over ``concurrency`` workers."""
    per_worker = n // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await fetch()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - start)


async def clients(port: int) -> tuple[dict[str, Fetch], Callable[[], Awaitable[None]]]:
    pool = HttpPool(max_connections_per_host=256)
    headers = [(b"host", f"{HOST}:{port}".encode()), (b"user-agent", b"bench")]

    async def ours() -> bytes:
        resp = await pool.request(b"GET", HOST, port, b"/", headers, timeout=5.0)
        return await resp.read()

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    url = f"http://{HOST}:{port}/"

    async def with_aiohttp() -> bytes:
        async with session.get(url, headers={"user-agent": "bench"}) as resp:
            return await resp.read()

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256))

    async def with_httpx() -> bytes:
        resp = await client.get(url, headers={"user-agent": "bench"})
        return resp.content

    async def close() -> None:
        await pool.aclose()
        await session.close()
        await client.aclose()

    fetches: dict[str, Fetch] = {
        "qanat": ours,
        f"aiohttp {aiohttp.__version__}": with_aiohttp,
        f"httpx {httpx.__version__}": with_httpx,
    }
    return fetches, close


async def measure(port: int, n: int, rounds: int) -> dict[tuple[str, int], float]:
    fetches, close = await clients(port)
    best: dict[tuple[str, int], float] = {}
    try:
        for fetch in fetches.values():  # warm up: connections, caches
            assert await fetch() == b"Hello, world!"
            await run(fetch, CONCURRENCY * 10, CONCURRENCY)
        for _ in range(rounds):
            for concurrency in (1, CONCURRENCY):
                for name, fetch in fetches.items():
                    rps = await run(fetch, n, concurrency)
                    key = (name, concurrency)
                    best[key] = max(best.get(key, 0.0), rps)
                    print(f"{name:>16} c={concurrency:<3} {rps:10.0f} req/s", file=sys.stderr)
    finally:
        await close()
    return best


def table(best: dict[tuple[str, int], float], n: int) -> str:
    lines = [
        f"| case ({n} GETs, uvloop) | client | requests/s | qanat is |",
        "|---|---|---:|---:|",
    ]
    for concurrency in (1, CONCURRENCY):
        case = "sequential" if concurrency == 1 else f"concurrency {concurrency}"
        ours = best[("qanat", concurrency)]
        for (name, c), rps in best.items():
            if c != concurrency:
                continue
            ratio = "—" if name == "qanat" else f"{ours / rps:.1f}× faster"
            lines.append(f"| {case} | {name} | {rps:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="requests per case and client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: n=640, 1 round")
    args = parser.parse_args()
    n, rounds = (640, 1) if args.quick else (args.n, args.rounds)
    proc, port = start_upstream()
    try:
        best = uvloop.run(measure(port, n, rounds))
    finally:
        proc.terminate()
        proc.wait()
    print(table(best, n))


if __name__ == "__main__":
    main()
