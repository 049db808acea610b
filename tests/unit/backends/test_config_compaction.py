"""What the memory and SQLite config logs keep: deleted keys are compacted, live keys are not."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.contract.helpers import DEADLINE, Collector

from qanat.backends._common import COMPACT_DELETED_AFTER, HISTORY_LIMIT
from qanat.backends.memory import MemoryConfigStore
from qanat.backends.sqlite import SqliteConfigStore
from qanat.errors import WatchCompacted
from qanat.ports import ConfigStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConfigStore]:
    """A fresh store of each kind that keeps its history itself."""
    if request.param == "memory":
        made: ConfigStore = MemoryConfigStore()
    else:
        made = await SqliteConfigStore.open(f"sqlite:///{tmp_path}/control.db")
    yield made
    await made.close()


async def fill(store: ConfigStore, writes: int, key: str = "filler") -> int:
    """Make ``writes`` writes to ``key``; return the last revision."""
    revision = 0
    for n in range(writes):
        revision = await store.set(key, str(n))
    return revision


async def test_deleted_key_history_goes_after_the_compaction_age(store: ConfigStore) -> None:
    """A key deleted COMPACT_DELETED_AFTER revisions ago has no history left; before that it has."""
    await store.set("gone", "1")
    await store.delete("gone")
    await store.set("live", "1")
    await fill(store, COMPACT_DELETED_AFTER - 2)
    assert [c.new_value for c in await store.history("gone")] == [None, "1"]
    await fill(store, 1)
    assert await store.history("gone") == []
    assert [c.new_value for c in await store.history("live")] == ["1"]


async def test_a_key_written_again_keeps_its_history(store: ConfigStore) -> None:
    """A deletion followed by a new write is not compacted: the key is live again."""
    await store.set("back", "1")
    await store.delete("back")
    await store.set("back", "2")
    await fill(store, COMPACT_DELETED_AFTER + 5)
    assert [c.new_value for c in await store.history("back")] == ["2", None, "1"]


async def test_replay_across_a_compacted_deletion_raises(store: ConfigStore) -> None:
    """A replay from before a compacted deletion raises, naming the first complete revision."""
    start = await store.set("gone", "1")
    deleted = start + 1
    assert await store.delete("gone")
    await fill(store, COMPACT_DELETED_AFTER)
    watch = store.watch("gone", start_revision=start)
    with pytest.raises(WatchCompacted) as caught:
        await asyncio.wait_for(anext(watch), DEADLINE)
    await watch.aclose()
    assert caught.value.compact_revision == deleted + 1


async def test_live_watch_survives_compaction_of_older_revisions(store: ConfigStore) -> None:
    """A watch that keeps up is never failed by trimming or compaction of other keys."""
    start = await store.set("mine", "first")
    watch = Collector(store.watch("mine", start_revision=start))
    try:
        await watch.wait_for(lambda c: len(c) == 1)
        await store.set("gone", "1")  # compacted later, at a revision after the watch's last
        await store.delete("gone")
        await fill(store, COMPACT_DELETED_AFTER + HISTORY_LIMIT)  # trims and compacts others
        await store.set("mine", "second")
        items = await watch.wait_for(lambda c: len(c) == 2)
        assert [c.new_value for c in items] == ["first", "second"]
        assert watch.error is None
    finally:
        await watch.close()


async def test_sqlite_log_is_bounded_by_live_keys(tmp_path: Path) -> None:
    """After deletions age out, the SQLite log holds only the rows of live keys."""
    store = await SqliteConfigStore.open(f"sqlite:///{tmp_path}/control.db")
    try:
        for n in range(20):
            await fill(store, 3, key=f"temp/{n}")
            await store.delete(f"temp/{n}")
        await fill(store, COMPACT_DELETED_AFTER + HISTORY_LIMIT)
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "control.db")
    try:
        keys = conn.execute("SELECT DISTINCT key FROM config_log").fetchall()
        rows = conn.execute("SELECT count(*) FROM config_log").fetchone()[0]
        trimmed = conn.execute("SELECT key FROM config_trimmed").fetchall()
    finally:
        conn.close()
    assert keys == [("filler",)]
    assert rows == HISTORY_LIMIT
    assert trimmed == [("filler",)]


async def test_sqlite_watcher_too_far_behind_raises_instead_of_skipping(tmp_path: Path) -> None:
    """A watcher that fell over 100 changes of its key behind raises WatchCompacted."""
    store = await SqliteConfigStore.open(f"sqlite:///{tmp_path}/control.db")
    start = await store.set("k", "0")
    watch = store.watch("k", start_revision=start)
    try:
        assert (await asyncio.wait_for(anext(watch), DEADLINE)).new_value == "0"
        await fill(store, HISTORY_LIMIT + 10, key="k")  # while the watcher does not read
        with pytest.raises(WatchCompacted):
            await asyncio.wait_for(anext(watch), DEADLINE)
    finally:
        await watch.aclose()
        await store.close()


async def test_replay_from_revision_zero_works_while_nothing_was_dropped(
    store: ConfigStore,
) -> None:
    """start_revision=0 replays everything while nothing has been trimmed or compacted."""
    await store.set("k", "1")
    watch = store.watch("k", start_revision=0)
    try:
        change = await asyncio.wait_for(anext(watch), DEADLINE)
        assert change.new_value == "1"
    finally:
        await watch.aclose()
