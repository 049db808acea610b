"""SQLite under faults, with real processes: a killed owner, and racing writers."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from tests.contract.helpers import DEADLINE, Collector

from qanat.backends.sqlite import SqliteConfigStore, SqliteRegistry
from qanat.ports import Instance

CHILD = str(Path(__file__).with_name("sqlite_child.py"))


async def spawn(*args: str) -> asyncio.subprocess.Process:
    """Start the child script and wait until it prints ``ready``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, CHILD, *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
    assert line == b"ready\n", f"child said {line!r}"
    return proc


async def test_sigkilled_owner_instance_expires_after_ttl(tmp_path: Path) -> None:
    """An instance whose process was killed with SIGKILL disappears once its TTL has passed."""
    url = f"sqlite:///{tmp_path}/control.db"
    observer = await SqliteRegistry.open(url)
    await observer.register(Instance("stays", "svc", "::1", 9000), ttl=30)
    proc = await spawn("register", url, "svc", "doomed", "1")
    watch = Collector(observer.watch("svc"))
    try:
        await watch.wait_for(lambda s: bool(s) and [i.id for i in s[-1]] == ["doomed", "stays"])
        proc.kill()
        assert await proc.wait() == -9
        await watch.wait_for(lambda s: [i.id for i in s[-1]] == ["stays"])
        assert [i.id for i in await observer.discover("svc")] == ["stays"]
        assert await observer.services() == ["svc"]
    finally:
        await watch.close()
        await observer.close()


async def test_racing_compare_and_set_has_exactly_one_winner(tmp_path: Path) -> None:
    """Two processes racing compare_and_set(expected_revision=0) on 40 keys: one winner each."""
    url = f"sqlite:///{tmp_path}/control.db"
    rounds = 40
    procs = [await spawn("race", url, name, str(rounds)) for name in ("left", "right")]
    store = await SqliteConfigStore.open(url)
    try:
        await store.set("race/go", "now")
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), DEADLINE * 3
        )
        won = {
            name: json.loads(out) for name, (out, _) in zip(("left", "right"), outputs, strict=True)
        }
        assert all(p.returncode == 0 for p in procs)
        wins = Counter(n for rounds_won in won.values() for n in rounds_won)
        assert sorted(wins) == list(range(rounds))
        assert set(wins.values()) == {1}
        stored = await store.get_all("race/")
        for name, rounds_won in won.items():
            assert all(stored[f"race/{n}"].value == name for n in rounds_won)
            for n in rounds_won:
                assert len(await store.history(f"race/{n}")) == 1
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await store.close()


async def test_racing_increments_lose_no_update(tmp_path: Path) -> None:
    """Two processes incrementing one counter by read + compare_and_set lose no increment."""
    url = f"sqlite:///{tmp_path}/control.db"
    times = 50
    procs = [await spawn("increment", url, name, str(times)) for name in ("left", "right")]
    store = await SqliteConfigStore.open(url)
    try:
        await store.set("race/go", "now")
        await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), DEADLINE * 3)
        assert all(p.returncode == 0 for p in procs)
        entry = await store.get("race/counter")
        assert entry is not None and entry.value == str(2 * times)
        history = await store.history("race/counter", limit=100)
        assert [c.new_value for c in reversed(history)] == [str(n) for n in range(1, 2 * times + 1)]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await store.close()
