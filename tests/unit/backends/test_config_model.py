"""Config stores against a plain-dict model, with Hypothesis-generated operation sequences."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qanat.backends.memory import MemoryConfigStore
from qanat.backends.sqlite import SqliteConfigStore
from qanat.ports import ChangeType, ConfigStore

KEYS = st.sampled_from(["a", "a/b", "a/c", "b"])
VALUES = st.text(max_size=5)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("delete"), KEYS, st.just("")),
        st.tuples(st.just("cas-current"), KEYS, VALUES),
        st.tuples(st.just("cas-stale"), KEYS, VALUES),
    ),
    max_size=25,
)


async def check_against_model(store: ConfigStore, ops: list[tuple[str, str, str]]) -> None:
    """Apply ``ops`` to the store and to a dict; every observable result must agree."""
    model: dict[str, str] = {}
    writes: dict[str, list[tuple[str | None, str | None]]] = {}
    last_revision = 0

    def record(key: str, new: str | None) -> None:
        writes.setdefault(key, []).append((model.get(key), new))

    for op, key, value in ops:
        entry = await store.get(key)
        current = entry.revision if entry else 0
        if op == "set":
            revision = await store.set(key, value)
            assert revision > last_revision
            last_revision = revision
            record(key, value)
            model[key] = value
        elif op == "delete":
            assert await store.delete(key) is (key in model)
            if key in model:
                record(key, None)
                del model[key]
        else:
            expected = current if op == "cas-current" else current + 1
            written = await store.compare_and_set(key, value, expected_revision=expected)
            assert written is (op == "cas-current")
            if written:
                record(key, value)
                model[key] = value
        after = await store.get(key)
        assert (after.value if after else None) == model.get(key)
        if after is not None:
            last_revision = max(last_revision, after.revision)

    assert {k: e.value for k, e in (await store.get_all("")).items()} == model
    assert list(await store.get_all("a/")) == sorted(k for k in model if k.startswith("a/"))
    for key, changes in writes.items():
        history = await store.history(key, limit=100)
        assert [(c.old_value, c.new_value) for c in reversed(history)] == changes
        for c in history:
            expected_type = (
                ChangeType.DELETED
                if c.new_value is None
                else ChangeType.ADDED
                if c.old_value is None
                else ChangeType.MODIFIED
            )
            assert c.type is expected_type


def run_with(make: Callable[[], Awaitable[ConfigStore]], ops: list[tuple[str, str, str]]) -> None:
    async def go() -> None:
        store = await make()
        try:
            await check_against_model(store, ops)
        finally:
            await store.close()

    asyncio.run(go())


@given(OPS)
@settings(max_examples=150, deadline=None)
def test_memory_store_matches_a_dict(ops: list[tuple[str, str, str]]) -> None:
    """Any sequence of set/delete/CAS leaves the memory store, and its history, like a dict."""

    async def make() -> ConfigStore:
        return MemoryConfigStore()

    run_with(make, ops)


@given(OPS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sqlite_store_matches_a_dict(ops: list[tuple[str, str, str]]) -> None:
    """Any sequence of set/delete/CAS leaves the SQLite store, and its history, like a dict."""
    with tempfile.TemporaryDirectory() as tmp:

        async def make() -> ConfigStore:
            return await SqliteConfigStore.open(f"sqlite:///{tmp}/c.db")

        run_with(make, ops)


def test_history_keeps_the_last_hundred_changes_per_key() -> None:
    """After 130 writes, history holds exactly the newest 100, and other keys keep theirs."""

    async def go(store: ConfigStore) -> None:
        await store.set("other", "kept")
        for n in range(130):
            await store.set("busy", str(n))
        history = await store.history("busy", limit=1000)
        assert [c.new_value for c in history] == [str(n) for n in range(129, 29, -1)]
        assert [c.new_value for c in await store.history("other")] == ["kept"]

    async def both() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for store in (
                MemoryConfigStore(),
                await SqliteConfigStore.open(f"sqlite:///{tmp}/c.db"),
            ):
                try:
                    await go(store)
                finally:
                    await store.close()

    asyncio.run(both())
