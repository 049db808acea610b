"""Discovery, measured in one run: watch propagation, cached lookups, churn.

Run: ``.venv/bin/python benchmarks/discovery.py [--quick] [--backends sqlite,etcd]``
(etcd on 127.0.0.1:2379: ``bash scripts/etcd.sh`` starts one). For each backend:

1. **Watch propagation**: this process registers, marks WARNING and deregisters
   instances (one change at a time, a random 0–30 ms pause before each so the
   writes do not phase-lock to the SQLite poll); a watcher reports the first
   snapshot containing each change. Latency = the watcher's ``time.monotonic()``
   when the snapshot arrives minus ours when the write's ``await`` returned
   (CLOCK_MONOTONIC is one system-wide clock on Linux, so the two processes
   agree). Once with the watcher in another process, once with a watch on the
   writer's own registry object.
2. **Lookups**: ``DiscoveryCache.instances(service)`` (a dict read) against
   ``registry.discover(service)`` (a backend round trip), best of several rounds.
3. **Churn**: worker processes register ``--instances`` instances, each under its
   own lease (TTL 10 s, the default, kept alive), then deregister them one by
   one; a watcher in another process reports when it sees all of them, then none.
4. **SQLite at scale**: one lease renewal transaction with 10 to 10,000 leases
   in the file, and the CPU a watcher of a 1,000-instance service spends per
   change to another service and per change to its own.

Helper processes live in ``discovery_children.py``, phase 4 in
``discovery_scale.py``, the report in ``discovery_report.py``.

Cleans up its temp dir, child processes and etcd prefix even when it fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from discovery_children import BASE, TTL, Child, backend_url, fingerprint, run_child
from discovery_report import BackendResult, Churn, Latencies, report
from discovery_scale import measure_scale
from harness import per_call_ns
from qanat.backends import open_registry
from qanat.errors import QanatError
from qanat.ports import Health, Instance, Registry
from qanat.runtime.discovery import DiscoveryCache

GAP = 0.030  # max random pause before a change; > the SQLite poll interval (25 ms)
STEP_TIMEOUT = 5.0  # one change must show within this, or it counts as missed
PHASE_TIMEOUT = 60.0  # a churn step (spawn, register 1,000, leave) must end within this


# ---------------------------------------------------------------- 1. watch propagation

Seen = tuple[float, int, str]  # (monotonic time, instance count, fingerprint)
Next = Callable[[float], Awaitable[Seen]]


def parse_seen(line: str) -> Seen:
    when, count, fp = [*line.split(" ", 2), ""][:3]  # an empty snapshot has no fingerprint
    return float(when), int(count), fp


async def propagation(
    registry: Registry, service: str, next_seen: Next, changes: int, rng: random.Random
) -> tuple[list[float], list[float], int]:
    """Make ``changes`` changes one at a time; time when ``next_seen`` reports each."""
    state = {f"b{n}": "p" for n in range(BASE)}

    def expected() -> str:
        return ",".join(f"{k}:{v}" for k, v in sorted(state.items()))

    await wait_for_fp(next_seen, expected(), STEP_TIMEOUT)  # the initial snapshot
    delays: list[float] = []
    writes: list[float] = []
    missed = 0
    for n in range(changes):
        await asyncio.sleep(rng.uniform(0, GAP))  # pacing, not waiting: decorrelate from polls
        cid, op = f"c{n // 3:04d}", n % 3
        start = time.monotonic()
        if op == 0:
            await registry.register(Instance(cid, service, "127.0.0.1", 9000), ttl=TTL)
            state[cid] = "p"
        elif op == 1:
            await registry.set_health(service, cid, Health.WARNING, "bench")
            state[cid] = "w"
        else:
            await registry.deregister(service, cid)
            del state[cid]
        done = time.monotonic()
        try:
            delays.append(await wait_for_fp(next_seen, expected(), STEP_TIMEOUT) - done)
            writes.append(done - start)
        except TimeoutError:
            missed += 1
    return delays, writes, missed


async def wait_for_fp(next_seen: Next, want: str, timeout: float) -> float:
    """Consume reports until one shows ``want``; return when the watcher saw it."""
    async with asyncio.timeout(timeout):
        while True:
            when, _, fp = await next_seen(timeout)
            if fp == want:
                return when


@contextlib.asynccontextmanager
async def local_feed(registry: Registry, service: str) -> AsyncIterator[Next]:
    """A watch on the writer's own registry object, reported through a queue."""
    queue: asyncio.Queue[Seen] = asyncio.Queue()

    async def pump() -> None:
        async for snapshot in registry.watch(service):
            queue.put_nowait((time.monotonic(), len(snapshot), fingerprint(snapshot)))

    async def next_seen(timeout: float) -> Seen:
        return await queue.get()

    task = asyncio.create_task(pump())
    try:
        yield next_seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def measure_watch(url: str, changes: int, rng: random.Random) -> list[Latencies]:
    """Propagation latency with the watcher in another process, then in this one."""
    service = f"watch-{uuid.uuid4().hex[:8]}"
    registry = await open_registry(url)
    results = []
    try:
        for n in range(BASE):
            await registry.register(Instance(f"b{n}", service, "127.0.0.1", 8000 + n), ttl=TTL)
        watcher = await Child.start("_watch", url, service)
        try:

            async def remote(timeout: float) -> Seen:
                return parse_seen(await watcher.line(timeout))

            result = await propagation(registry, service, remote, changes, rng)
            results.append(Latencies("another process", *result))
        finally:
            await watcher.stop()
        async with local_feed(registry, service) as local:
            result = await propagation(registry, service, local, changes, rng)
            results.append(Latencies("same process", *result))
    finally:
        await registry.close()
    return results


# ---------------------------------------------------------------- 2. lookups


async def per_await_ns(fn: Callable[[], Awaitable[object]], number: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(number):
        await fn()
    return (time.perf_counter_ns() - start) / number


async def measure_lookups(url: str, rounds: int, round_s: float) -> tuple[float, float]:
    """Lookups per second: ``DiscoveryCache.instances`` and ``registry.discover``, best round."""
    service = f"lookup-{uuid.uuid4().hex[:8]}"
    registry = await open_registry(url)
    try:
        for n in range(BASE):
            await registry.register(Instance(f"b{n}", service, "127.0.0.1", 8000 + n), ttl=TTL)
        async with DiscoveryCache(registry) as cache:
            await cache.wait_ready(service)
            if {len(cache.instances(service)), len(await registry.discover(service))} != {BASE}:
                raise RuntimeError("the cache or the registry does not show the instances")
            discover = lambda: registry.discover(service)  # noqa: E731
            raw_number = max(10, int(round_s * 1e9 / await per_await_ns(discover, 20)))
            cached_ns, raw_ns = [], []
            for _ in range(rounds):  # interleaved, as harness.measure does
                cached_ns.append(per_call_ns(lambda: cache.instances(service), 200_000))
                raw_ns.append(await per_await_ns(discover, raw_number))
    finally:
        await registry.close()
    return 1e9 / min(cached_ns), 1e9 / min(raw_ns)


# ---------------------------------------------------------------- 3. churn


async def until_count(watcher: Child, count: int) -> float:
    """When the watcher first reported ``count`` instances (reads every report meanwhile)."""
    while True:
        when, seen, _ = parse_seen(await watcher.line(PHASE_TIMEOUT))
        if seen == count:
            return when


async def measure_churn(url: str, total: int, processes: int) -> Churn:
    """``total`` instances in ``processes`` workers register, then leave; a watcher times both."""
    service = f"churn-{uuid.uuid4().hex[:8]}"
    processes = max(1, min(processes, total))
    share = math.ceil(total / processes)
    watcher = await Child.start("_watch", url, service)
    workers: list[Child] = []
    try:
        await until_count(watcher, 0)
        for p in range(processes):
            first, count = p * share, max(0, min(share, total - p * share))
            workers.append(await Child.start("_churn", url, service, str(first), str(count)))
        for w in workers:
            if await w.line(PHASE_TIMEOUT) != "ready":
                raise RuntimeError("a churn worker did not start")
        spans = []
        for target in (total, 0):
            seen = asyncio.create_task(until_count(watcher, target))  # reads while they write
            try:
                for w in workers:
                    await w.send("go")
                lines = [(await w.line(PHASE_TIMEOUT)).split() for w in workers]
                start = min(float(line[1]) for line in lines)
                end = max(float(line[2]) for line in lines)
                spans.append((end - start, await seen - start))
            finally:
                seen.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await seen
        return Churn(total, processes, *spans[0], *spans[1])
    finally:
        for child in [watcher, *workers]:
            await child.stop()


# ---------------------------------------------------------------- the run and its report


async def run(args: argparse.Namespace) -> list[BackendResult]:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the run as Ctrl-C does, so the finally blocks clean up.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    rng = random.Random(args.seed)
    changes, instances = (51, 100) if args.quick else (501, 1000)
    results = []
    for name in args.backends.split(","):
        async with backend_url(name, args.etcd) as url:
            print(f"{name}: watch propagation ({changes} changes x 2)...", file=sys.stderr)
            watch = await measure_watch(url, changes, rng)
            print(f"{name}: lookups...", file=sys.stderr)
            lookups = await measure_lookups(url, 3 if args.quick else 5, 0.1 if args.quick else 0.3)
            print(f"{name}: churn ({instances} instances)...", file=sys.stderr)
            churn = await measure_churn(url, instances, args.processes)
            scale = None
            if name == "sqlite" and not args.no_scale:
                print(f"{name}: scale (renewals, watcher wakes)...", file=sys.stderr)
                scale = await measure_scale(url, args.quick)
            results.append(BackendResult(name, watch, lookups, churn, scale))
    return results


def main(argv: list[str]) -> None:
    if run_child(argv):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 20 s)")
    parser.add_argument("--backends", default="sqlite,etcd", help="comma-separated: sqlite,etcd")
    parser.add_argument("--etcd", default="etcd://127.0.0.1:2379", help="the etcd to use")
    parser.add_argument("--processes", type=int, default=4, help="churn worker processes")
    parser.add_argument("--no-scale", action="store_true", help="skip the SQLite scale phase")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random pauses")
    args = parser.parse_args(argv)
    if unknown := set(args.backends.split(",")) - {"sqlite", "etcd"}:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}; choose from sqlite,etcd")
    load = os.getloadavg()
    try:
        results = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit("interrupted; cleaned up") from None
    except QanatError as exc:  # e.g. etcd not running: say so without a traceback
        raise SystemExit(f"discovery benchmark: {type(exc).__name__}: {exc}") from None
    command = " ".join([".venv/bin/python", "benchmarks/discovery.py", *argv])
    print(report(results, command, load, os.getloadavg()))


if __name__ == "__main__":
    main(sys.argv[1:])
