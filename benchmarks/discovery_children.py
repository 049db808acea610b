"""Helpers of ``benchmarks/discovery.py``: its helper processes and fresh namespaces.

Each helper process runs as ``discovery.py _<mode> ARGS`` and talks to the
benchmark by lines on stdin/stdout; each exits when its stdin closes, so a
helper cannot outlive the benchmark. ``backend_url`` gives each backend a
fresh namespace and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from qanat.backends import open_registry
from qanat.ports import Instance

SCRIPT = Path(__file__).resolve().parent / "discovery.py"
BASE = 4  # instances present during the whole propagation and lookup phases
TTL = 10.0  # the Registry port's default lease


def fingerprint(snapshot: Sequence[Instance]) -> str:
    """What a snapshot says, compactly: ``id:health-initial`` for each instance, by id."""
    return ",".join(f"{i.id}:{i.health.value[0]}" for i in snapshot)


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


async def child_watch_cpu(url: str, service: str) -> None:
    """Watch ``service``; per stdin line print ``<cpu seconds> <snapshots> <last size>``.

    The CPU time is this whole process's (``time.process_time``): what watching
    costs the watcher, polls and re-reads included.
    """
    registry = await open_registry(url)
    seen = [0, 0]  # snapshots, size of the last one

    async def follow() -> None:
        async for snapshot in registry.watch(service):
            seen[0] += 1
            seen[1] = len(snapshot)

    task = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    try:
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(f"{time.process_time()!r} {seen[0]} {seen[1]}", flush=True)
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


def run_child(argv: list[str]) -> bool:
    """Run the helper named by ``argv[0]`` if it names one; False if it does not."""
    if argv[:1] == ["_watch"]:
        asyncio.run(child_watch(argv[1], argv[2]))
    elif argv[:1] == ["_watchcpu"]:
        asyncio.run(child_watch_cpu(argv[1], argv[2]))
    elif argv[:1] == ["_churn"]:
        asyncio.run(child_churn(argv[1], argv[2], int(argv[3]), int(argv[4]), 16))
    else:
        return False
    return True


class Child:
    """``discovery.py`` run as a helper process, talked to by lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), *args,
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
