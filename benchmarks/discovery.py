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

Cleans up its temp dir, child processes and etcd prefix even when it fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import per_call_ns
from qanat.backends import open_registry
from qanat.errors import QanatError
from qanat.ports import Health, Instance, Registry
from qanat.runtime.discovery import DiscoveryCache

HERE = Path(__file__).resolve()
BASE = 4  # instances present during the whole propagation and lookup phases
GAP = 0.030  # max random pause before a change; > the SQLite poll interval (25 ms)
TTL = 10.0  # the Registry port's default lease
STEP_TIMEOUT = 5.0  # one change must show within this, or it counts as missed
PHASE_TIMEOUT = 60.0  # a churn step (spawn, register 1,000, leave) must end within this


def fingerprint(snapshot: Sequence[Instance]) -> str:
    """What a snapshot says, compactly: ``id:health-initial`` for each instance, by id."""
    return ",".join(f"{i.id}:{i.health.value[0]}" for i in snapshot)


# ---------------------------------------------------------------- child processes


async def child_watch(url: str, service: str) -> None:
    """Print ``<monotonic> <count> <fingerprint>`` per snapshot until stdin closes."""
    registry = await open_registry(url)

    async def report() -> None:
        async for snapshot in registry.watch(service):
            now = time.monotonic()
            fp = fingerprint(snapshot) if len(snapshot) <= 2 * BASE else "(many)"
            sys.stdout.write(f"{now!r} {len(snapshot)} {fp}\n")
            sys.stdout.flush()

    task = asyncio.create_task(report())
    try:  # the parent closes our stdin (or dies): then stop
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await registry.close()


async def child_churn(url: str, service: str, first: int, count: int, concurrency: int) -> None:
    """Register ``count`` instances on "go", deregister them on "leave"; print both spans."""
    registry = await open_registry(url)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def each(fn: Callable[[int], Awaitable[None]]) -> None:
        async def one(n: int) -> None:
            async with gate:
                await fn(n)

        await asyncio.gather(*(one(n) for n in range(first, first + count)))

    async def register(n: int) -> None:
        inst = Instance(f"i{n:05d}", service, "127.0.0.1", 10_000 + n % 50_000)
        await registry.register(inst, ttl=TTL)

    async def deregister(n: int) -> None:
        await registry.deregister(service, f"i{n:05d}")

    try:
        print("ready", flush=True)
        for word, fn in (("registered", register), ("left", deregister)):
            if not await loop.run_in_executor(None, sys.stdin.readline):  # "go", then "leave"
                return  # stdin closed: the parent is gone
            start = time.monotonic()
            await each(fn)
            print(f"{word} {start!r} {time.monotonic()!r}", flush=True)
    finally:
        await registry.close()


class Child:
    """This script run as a helper process, talked to by lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the helpers
        )  # fmt: skip
        return cls(proc)

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"helper process {self.proc.pid} exited ({self.proc.returncode})")
        return raw.decode().strip()

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        """Close its stdin (it exits cleanly), then terminate, then kill, each with a deadline."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        for signal_it in (None, self.proc.terminate, self.proc.kill):
            if signal_it is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal_it()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()
                    return


# ---------------------------------------------------------------- 1. watch propagation

Seen = tuple[float, int, str]  # (monotonic time, instance count, fingerprint)
Next = Callable[[float], Awaitable[Seen]]


def parse_seen(line: str) -> Seen:
    when, count, fp = [*line.split(" ", 2), ""][:3]  # an empty snapshot has no fingerprint
    return float(when), int(count), fp


@dataclass(frozen=True)
class Latencies:
    watcher: str  # "another process" or "same process"
    delays: list[float]  # seconds from the write's completion to the watcher's snapshot
    writes: list[float]  # seconds each write took (delay + write = from the write's start)
    missed: int

    @property
    def since_start(self) -> list[float]:
        return [d + w for d, w in zip(self.delays, self.writes, strict=True)]


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


@dataclass(frozen=True)
class Churn:
    instances: int
    processes: int
    register_s: float  # first registration started -> last one returned
    all_seen_s: float  # first registration started -> watcher saw all
    leave_s: float
    none_seen_s: float


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


@dataclass(frozen=True)
class BackendResult:
    name: str
    watch: list[Latencies]
    lookups: tuple[float, float]
    churn: Churn


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
    return "\n".join(out)


@contextlib.asynccontextmanager
async def backend_url(name: str, etcd: str) -> AsyncIterator[str]:
    """A fresh namespace for one backend; removed afterwards, whatever happened."""
    if name == "sqlite":
        tmp = tempfile.mkdtemp(prefix="qanat-bench-")
        try:
            yield f"sqlite:///{tmp}/control.db"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        prefix = f"/qanat-bench-{uuid.uuid4().hex[:12]}"
        url = f"{etcd}{'&' if '?' in etcd else '?'}prefix={prefix}"
        await (await open_registry(url)).close()  # unreachable: fail now, nothing to clean
        try:
            yield url
        finally:
            await delete_etcd_prefix(etcd, prefix)


async def delete_etcd_prefix(etcd: str, prefix: str) -> None:
    import aetcd

    from qanat.backends.etcd import parse_etcd_url

    host, port = parse_etcd_url(etcd).endpoints[0]
    deadline = time.monotonic() + 15  # the shared etcd may be restarting (fault tests)
    while True:
        client = aetcd.Client(host, port, timeout=3)
        try:
            await client.delete_prefix(prefix.encode())
            return
        except aetcd.exceptions.ClientError as exc:
            if time.monotonic() > deadline:
                print(f"could not delete etcd prefix {prefix} ({exc}); delete it with: "
                      f"etcdctl del --prefix {prefix}", file=sys.stderr)  # fmt: skip
                return
            await asyncio.sleep(0.5)  # retry pacing: etcd is down, nothing to wait on
        finally:
            await client.close()


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
            results.append(BackendResult(name, watch, lookups, churn))
    return results


def main(argv: list[str]) -> None:
    if argv[:1] == ["_watch"]:
        return asyncio.run(child_watch(argv[1], argv[2]))
    if argv[:1] == ["_churn"]:
        return asyncio.run(child_churn(argv[1], argv[2], int(argv[3]), int(argv[4]), 16))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 20 s)")
    parser.add_argument("--backends", default="sqlite,etcd", help="comma-separated: sqlite,etcd")
    parser.add_argument("--etcd", default="etcd://127.0.0.1:2379", help="the etcd to use")
    parser.add_argument("--processes", type=int, default=4, help="churn worker processes")
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
