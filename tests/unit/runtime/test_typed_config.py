"""Typed live config: key layout, validation at start, atomic valid changes, rejected bad ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from qanat.backends import open_config_store
from qanat.backends.memory import MemoryConfigStore
from qanat.errors import BackendUnreachable, ConfigError, Timeout
from qanat.ports import ConfigChange, ConfigEntry, ConfigStore
from qanat.runtime.typed_config import BoundConfig, decode_value, nest, validate

P = "config/orders"


class Db(BaseModel):
    model_config = ConfigDict(frozen=True)
    host: str = "localhost"
    port: int = 5432


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)
    timeout: float = 1.0
    retries: int = 3
    mode: Literal["fast", "safe"] = "safe"
    name: str = "orders"
    hosts: tuple[str, ...] = ()
    db: Db = Db()


class Required(BaseModel):
    model_config = ConfigDict(frozen=True)
    url: str


class FlakyStore(MemoryConfigStore):
    """The real memory store whose watches refuse to start while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.failed = asyncio.Event()

    def watch(  # type: ignore[override]
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[ConfigChange]:
        if self.down:
            self.failed.set()
            raise BackendUnreachable("config store down")
        return super().watch(key, prefix=prefix, start_revision=start_revision)


@pytest.fixture
async def store() -> AsyncIterator[MemoryConfigStore]:
    s = MemoryConfigStore()
    yield s
    await s.close()


async def started(store: ConfigStore, **kwargs: object) -> BoundConfig[Settings]:
    bound = BoundConfig(store, P, Settings, **kwargs)  # type: ignore[arg-type]
    await bound.start()
    return bound


def recorder(bound: BoundConfig[Settings]) -> asyncio.Queue[tuple[Settings, Settings]]:
    """A queue of every (old, new) pair the bound config announces."""
    queue: asyncio.Queue[tuple[Settings, Settings]] = asyncio.Queue()
    bound.on_change(lambda old, new: queue.put_nowait((old, new)))
    return queue


async def next_pair(queue: asyncio.Queue[tuple[Settings, Settings]]) -> tuple[Settings, Settings]:
    async with asyncio.timeout(5):
        return await queue.get()


# --- pure layout ------------------------------------------------------------------------------


def test_decode_value_only_decodes_json_objects_and_lists() -> None:
    """Objects and lists are decoded; numbers, words and broken JSON stay plain strings."""
    assert decode_value('{"a": 1}') == {"a": 1}
    assert decode_value("[1, 2]") == [1, 2]
    assert decode_value("8080") == "8080"
    assert decode_value('"quoted"') == '"quoted"'
    assert decode_value("[draft") == "[draft"


def test_nest_merges_json_object_with_nested_keys() -> None:
    """A JSON object at ``db`` and a key ``db/port`` merge, the nested key winning."""
    raw = {"db": '{"host": "h", "port": 1}', "db/port": "2", "timeout": "3"}
    assert nest(P, raw) == {"db": {"host": "h", "port": "2"}, "timeout": "3"}


def test_nest_refuses_a_plain_value_with_children() -> None:
    """``db`` holding a plain value and ``db/host`` existing is a ConfigError naming both."""
    with pytest.raises(ConfigError, match="config/orders/db holds a plain value") as info:
        nest(P, {"db": "x", "db/host": "h"})
    assert info.value.source == "config/orders/db/host"


def test_validate_names_key_value_and_reason() -> None:
    """A bad value is reported with its full key, the value and pydantic's message."""
    with pytest.raises(ConfigError) as info:
        validate(Settings, P, {"retries": "many", "db/port": "x"})
    assert info.value.source == "config/orders/retries"  # the first field in model order
    text = str(info.value)
    assert "config/orders/retries" in text and "'many'" in text
    assert "config/orders/db/port" in text and "valid integer" in text


def test_validate_names_a_missing_required_key() -> None:
    """A required field with no key says which key to set."""
    with pytest.raises(ConfigError, match="key not set") as info:
        validate(Required, "svc", {})
    assert info.value.source == "svc/url"


def test_model_must_be_frozen() -> None:
    """A mutable model is refused, since readers share one instance."""

    class Loose(BaseModel):
        x: int = 1

    with pytest.raises(ConfigError, match="frozen"):
        BoundConfig(MemoryConfigStore(), P, Loose)


# --- start ------------------------------------------------------------------------------------


async def test_start_loads_and_converts_values(store: MemoryConfigStore) -> None:
    """Plain strings are converted by pydantic, str fields are verbatim, JSON lists decode."""
    for key, value in {
        "timeout": "2.5",
        "retries": "7",
        "mode": "fast",
        "name": "123",
        "hosts": '["a", "b"]',
        "db/host": "db1",
    }.items():
        await store.set(f"{P}/{key}", value)
    await store.set("config/orders-other/retries", "oops")  # a sibling prefix is not ours
    bound = await started(store)
    assert bound.current == Settings(
        timeout=2.5, retries=7, mode="fast", name="123", hosts=("a", "b"), db=Db(host="db1")
    )
    await bound.close()


async def test_start_with_invalid_config_raises(store: MemoryConfigStore) -> None:
    """Startup with an invalid value raises ConfigError naming the key and the problem."""
    await store.set(f"{P}/mode", "turbo")
    with pytest.raises(ConfigError, match=r"config/orders/mode: .*'fast' or 'safe'.*'turbo'"):
        await started(store)


# --- live changes -----------------------------------------------------------------------------


async def test_valid_change_is_applied_and_announced(store: MemoryConfigStore) -> None:
    """A valid change replaces the model and listeners get the old and the new one."""
    bound = await started(store)
    seen = recorder(bound)
    await store.set(f"{P}/retries", "5")
    old, new = await next_pair(seen)
    assert (old.retries, new.retries) == (3, 5)
    assert bound.current is new
    assert bound.last_error is None
    await bound.close()


async def test_invalid_change_is_rejected_and_old_config_stays(
    store: MemoryConfigStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid change keeps the running model, sets last_error and logs key, value, reason."""
    await store.set(f"{P}/retries", "4")
    bound = await started(store)
    before = bound.current
    seen = recorder(bound)
    with caplog.at_level(logging.ERROR, logger="qanat.config"):
        rev = await store.set(f"{P}/retries", "lots")
        await bound.wait_for_revision(rev)
    assert bound.current is before
    assert bound.last_error is not None
    assert (bound.last_error.key, bound.last_error.value) == (f"{P}/retries", "lots")
    assert bound.last_error.revision == rev
    assert "valid integer" in bound.last_error.reason
    assert any(
        "config/orders/retries" in r.getMessage() and "'lots'" in r.getMessage()
        for r in caplog.records
    )
    assert seen.empty()
    await store.set(f"{P}/retries", "6")  # fixing the key applies again and clears the error
    old, new = await next_pair(seen)
    assert (old.retries, new.retries) == (4, 6)
    assert bound.last_error is None
    await bound.close()


async def test_readers_see_whole_old_or_whole_new(store: MemoryConfigStore) -> None:
    """While a JSON value flips two fields at once, every read sees a consistent pair."""
    await store.set(f"{P}/db", '{"host": "a", "port": 1}')
    bound = await started(store)
    seen = recorder(bound)
    pairs = set()
    for i in range(20):
        host, port = ("b", 2) if i % 2 == 0 else ("a", 1)
        await store.set(f"{P}/db", f'{{"host": "{host}", "port": {port}}}')
        await next_pair(seen)
        pairs.add((bound.current.db.host, bound.current.db.port))
    assert pairs == {("a", 1), ("b", 2)}
    with pytest.raises(ValidationError):
        bound.current.retries = 9  # type: ignore[misc]
    await bound.close()


async def test_deleting_a_key_restores_the_default(store: MemoryConfigStore) -> None:
    """A deleted key falls back to the field's default."""
    await store.set(f"{P}/timeout", "9")
    bound = await started(store)
    seen = recorder(bound)
    await store.delete(f"{P}/timeout")
    _, new = await next_pair(seen)
    assert new.timeout == 1.0
    await bound.close()


async def test_async_listener_is_awaited_and_a_failing_one_is_isolated(
    store: MemoryConfigStore,
) -> None:
    """An async listener is awaited; a listener that raises does not stop the next one."""
    bound = await started(store)
    got: asyncio.Queue[int] = asyncio.Queue()

    async def async_listener(old: Settings, new: Settings) -> None:
        await got.put(new.retries)

    bound.on_change(lambda old, new: 1 / 0)
    bound.on_change(async_listener)
    await store.set(f"{P}/retries", "8")
    async with asyncio.timeout(5):
        assert await got.get() == 8
    await bound.close()


async def test_failed_watch_keeps_config_and_recovers_by_reloading() -> None:
    """While the watch is down the config stays; a change made meanwhile arrives on reconnect."""
    store = FlakyStore()
    await store.set(f"{P}/retries", "1")
    bound = await started(store)
    seen = recorder(bound)
    async with asyncio.timeout(5):
        await store.failed.wait()
    assert bound.current.retries == 1
    await store.set(f"{P}/retries", "2")
    store.down = False
    _, new = await next_pair(seen)
    assert new.retries == 2
    await bound.close()
    await store.close()


async def test_wait_for_revision_times_out(store: MemoryConfigStore) -> None:
    """Waiting for a revision that never comes raises Timeout."""
    bound = await started(store)
    with pytest.raises(Timeout, match="revision 99"):
        await bound.wait_for_revision(99, timeout=0.05)
    await bound.close()


async def test_works_on_the_sqlite_store(tmp_path: Path) -> None:
    """The same binding follows changes written to the embedded SQLite store."""
    url = f"sqlite:///{tmp_path}/control.db"
    store = await open_config_store(url)
    writer = await open_config_store(url)  # another client of the same file
    await store.set(f"{P}/retries", "2")
    bound = await started(store)
    assert bound.current.retries == 2
    seen = recorder(bound)
    await writer.set(f"{P}/retries", "12")
    _, new = await next_pair(seen)
    assert new.retries == 12
    await bound.close()
    await writer.close()
    await store.close()


class CountingLoads(MemoryConfigStore):
    """The real memory store, counting ``get_all`` calls (each is a full load of a prefix)."""

    loads = 0

    async def get_all(self, prefix: str) -> dict[str, ConfigEntry]:
        self.loads += 1
        return await super().get_all(prefix)


async def test_follows_the_watch_when_the_store_compacted_past_the_last_load() -> None:
    """A prefix last written before a compaction is followed by its watch, not by reloads."""
    from qanat.backends._common import COMPACT_DELETED_AFTER

    store = CountingLoads()
    await store.set(f"{P}/retries", "5")
    await store.set("elsewhere/gone", "x")
    await store.delete("elsewhere/gone")
    for n in range(COMPACT_DELETED_AFTER):  # ages the deletion out: it is compacted
        await store.set("elsewhere/filler", str(n))
    bound = BoundConfig(store, P, Settings)
    try:
        assert (await bound.start()).retries == 5
        revision = await store.set(f"{P}/retries", "7")
        await bound.wait_for_revision(revision)
        loads = store.loads  # the start, and one reload after WatchCompacted
        for value in ("8", "9"):
            revision = await store.set(f"{P}/retries", value)
            await bound.wait_for_revision(revision)
        assert bound.current.retries == 9
        assert store.loads == loads <= 2
    finally:
        await bound.close()
