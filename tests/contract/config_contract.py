"""The ``ConfigStore`` contract: what every config backend must do.

Subclass ``ConfigStoreContract`` in a ``test_*.py`` module, name the subclass
``Test...`` and implement ``make_config_store`` (a fresh, empty namespace on
each call). Implement ``make_second_config_store`` to run the cross-client
tests. A backend whose history is not bounded by writes alone (etcd keeps
every revision until compacted) overrides ``forget_history`` and, if that
must not touch a shared server, the ``compacting_store`` fixture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.contract.helpers import DEADLINE, Collector

from qanat.backends._common import HISTORY_LIMIT
from qanat.errors import ConfigError, WatchCompacted
from qanat.ports import ChangeType, ConfigChange, ConfigStore

ADDED, MODIFIED, DELETED = ChangeType.ADDED, ChangeType.MODIFIED, ChangeType.DELETED
Changes = list[ConfigChange]


def summary(changes: Changes) -> list[tuple[str, str | None, str | None, ChangeType]]:
    """(key, old, new, type) of each change, revisions left out."""
    return [(c.key, c.old_value, c.new_value, c.type) for c in changes]


class ConfigStoreContract:
    """Behaviour every ``ConfigStore`` backend shares; subclasses provide the backend."""

    async def make_config_store(self) -> ConfigStore:
        """A client of a fresh, empty namespace."""
        raise NotImplementedError

    async def make_second_config_store(self, first: ConfigStore) -> ConfigStore:
        """Another client of the same namespace as ``first`` (another process, in effect)."""
        pytest.skip("this backend has no second client")

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConfigStore]:
        store = await self.make_config_store()
        yield store
        await store.close()

    @pytest.fixture
    async def other_store(self, store: ConfigStore) -> AsyncIterator[ConfigStore]:
        other = await self.make_second_config_store(store)
        yield other
        await other.close()

    @pytest.fixture
    async def compacting_store(self, store: ConfigStore) -> ConfigStore:
        """The store ``forget_history`` may compact (by default: the test's own store)."""
        return store

    async def forget_history(self, store: ConfigStore, revision: int) -> None:
        """Drop history before ``revision`` if writing past the kept history does not."""

    async def live_watch(
        self, store: ConfigStore, key: str, *, prefix: bool = False
    ) -> Collector[ConfigChange]:
        """A watch without ``start_revision``, proven established by writing a probe key.

        The probe (``key`` itself, or ``key + "probe"`` for a prefix watch) is
        written until the watcher reports it; the collected items are then cleared.
        """
        watch = Collector(store.watch(key, prefix=prefix))
        probe = key + "probe" if prefix else key
        for attempt in range(50):
            await store.set(probe, f"probe-{attempt}")
            try:
                await watch.wait_for(lambda c: len(c) > 0, timeout=0.2)
                break
            except AssertionError:
                continue
        await store.delete(probe)
        await watch.wait_for(lambda c: c[-1].type is DELETED and c[-1].key == probe)
        watch.items.clear()
        return watch

    # -- get / set / delete / get_all -----------------------------------------

    async def test_get_of_missing_key_is_none(self, store: ConfigStore) -> None:
        """A key never written reads as None."""
        assert await store.get("app/missing") is None

    async def test_set_then_get_returns_value_and_revision(self, store: ConfigStore) -> None:
        """get returns the value written and the revision set() returned."""
        revision = await store.set("app/timeout", "1.5s")
        entry = await store.get("app/timeout")
        assert entry is not None
        assert (entry.key, entry.value, entry.revision) == ("app/timeout", "1.5s", revision)

    async def test_revisions_increase_store_wide(self, store: ConfigStore) -> None:
        """Every write, to any key, gets a larger revision than the one before."""
        revisions = [
            await store.set("a", "1"),
            await store.set("b", "1"),
            await store.set("a", "2"),
            await store.set("a", "2"),
        ]
        assert revisions == sorted(set(revisions))
        entry_a, entry_b = await store.get("a"), await store.get("b")
        assert entry_a is not None and entry_a.revision == revisions[3]
        assert entry_b is not None and entry_b.revision == revisions[1]

    async def test_values_are_kept_verbatim(self, store: ConfigStore) -> None:
        """Values round-trip exactly: empty, unicode, newlines, JSON."""
        values = ["", "قنات ✓", "line1\nline2\r\n", '{"a": [1, 2]}', " padded "]
        for n, value in enumerate(values):
            await store.set(f"v/{n}", value)
        assert [(await store.get(f"v/{n}")) for n in range(len(values))] == [
            e for e in (await store.get_all("v/")).values()
        ]
        assert [e.value for e in (await store.get_all("v/")).values()] == values

    async def test_delete_reports_whether_the_key_existed(self, store: ConfigStore) -> None:
        """delete returns True and removes an existing key, False for a missing one."""
        await store.set("k", "v")
        assert await store.delete("k") is True
        assert await store.get("k") is None
        assert await store.delete("k") is False

    async def test_get_all_returns_keys_under_prefix_only(self, store: ConfigStore) -> None:
        """get_all(prefix) returns exactly the live keys starting with prefix, in key order."""
        for key in ("svc/orders/b", "svc/orders/a", "svc/ordersx", "svc/pay/a", "other"):
            await store.set(key, key.upper())
        await store.set("svc/orders/gone", "x")
        await store.delete("svc/orders/gone")
        found = await store.get_all("svc/orders/")
        assert list(found) == ["svc/orders/a", "svc/orders/b"]
        assert [e.value for e in found.values()] == ["SVC/ORDERS/A", "SVC/ORDERS/B"]
        assert list(await store.get_all("svc/orders")) == [
            "svc/orders/a",
            "svc/orders/b",
            "svc/ordersx",
        ]
        assert list(await store.get_all("")) == sorted(
            ["svc/orders/b", "svc/orders/a", "svc/ordersx", "svc/pay/a", "other"]
        )

    # -- compare-and-set ---------------------------------------------------------

    async def test_cas_with_zero_creates_only_if_absent(self, store: ConfigStore) -> None:
        """expected_revision=0 writes a missing key and refuses an existing one."""
        assert await store.compare_and_set("lock", "me", expected_revision=0) is True
        assert await store.compare_and_set("lock", "you", expected_revision=0) is False
        entry = await store.get("lock")
        assert entry is not None and entry.value == "me"

    async def test_cas_succeeds_only_on_current_revision(self, store: ConfigStore) -> None:
        """A CAS with the key's current revision writes; a stale one changes nothing."""
        first = await store.set("k", "1")
        second = await store.set("k", "2")
        assert await store.compare_and_set("k", "stale", expected_revision=first) is False
        assert await store.compare_and_set("k", "3", expected_revision=second) is True
        entry = await store.get("k")
        assert entry is not None and entry.value == "3" and entry.revision > second
        assert await store.compare_and_set("k", "4", expected_revision=second) is False

    async def test_cas_on_missing_key_with_nonzero_revision_fails(self, store: ConfigStore) -> None:
        """A CAS expecting a revision on a key that does not exist writes nothing."""
        revision = await store.set("k", "1")
        await store.delete("k")
        assert await store.compare_and_set("k", "x", expected_revision=revision) is False
        assert await store.get("k") is None
        assert await store.compare_and_set("k", "again", expected_revision=0) is True

    # -- history ------------------------------------------------------------------

    async def test_history_is_newest_first_with_old_and_new_values(
        self, store: ConfigStore
    ) -> None:
        """history lists each change (type, old, new, revision), newest first."""
        r1 = await store.set("k", "1")
        await store.set("other", "x")
        r2 = await store.set("k", "2")
        await store.delete("k")
        r4 = await store.set("k", "4")
        changes = await store.history("k")
        assert summary(changes) == [
            ("k", None, "4", ADDED),
            ("k", "2", None, DELETED),
            ("k", "1", "2", MODIFIED),
            ("k", None, "1", ADDED),
        ]
        revisions = [c.revision for c in changes]
        assert revisions[0] == r4 and revisions[2] == r2 and revisions[3] == r1
        assert revisions == sorted(revisions, reverse=True)

    async def test_history_limit_and_unknown_key(self, store: ConfigStore) -> None:
        """history returns at most ``limit`` changes, and nothing for an unknown key."""
        for n in range(5):
            await store.set("k", str(n))
        assert [c.new_value for c in await store.history("k", limit=2)] == ["4", "3"]
        assert await store.history("never") == []

    # -- watch ----------------------------------------------------------------------

    async def test_watch_key_reports_each_change_with_old_and_new(self, store: ConfigStore) -> None:
        """A key watch yields added, modified and deleted changes of that key only."""
        watch = await self.live_watch(store, "app/flag")
        try:
            await store.set("app/flag", "on")
            await store.set("app/flagship", "ignored")
            await store.set("app/flag", "off")
            await store.delete("app/flag")
            await watch.wait_for(lambda c: len(c) >= 3)
            assert summary(watch.items) == [
                ("app/flag", None, "on", ADDED),
                ("app/flag", "on", "off", MODIFIED),
                ("app/flag", "off", None, DELETED),
            ]
            revisions = [c.revision for c in watch.items]
            assert revisions == sorted(set(revisions))
        finally:
            await watch.close()

    async def test_watch_prefix_reports_keys_under_it_only(self, store: ConfigStore) -> None:
        """A prefix watch yields changes to every key under the prefix and nothing else."""
        watch = await self.live_watch(store, "svc/orders/", prefix=True)
        try:
            await store.set("svc/orders/a", "1")
            await store.set("svc/payments/a", "ignored")
            await store.set("svc/orders/b/c", "2")
            await store.set("svc/orders/a", "3")
            await watch.wait_for(lambda c: len(c) >= 3)
            assert summary(watch.items) == [
                ("svc/orders/a", None, "1", ADDED),
                ("svc/orders/b/c", None, "2", ADDED),
                ("svc/orders/a", "1", "3", MODIFIED),
            ]
        finally:
            await watch.close()

    async def test_start_revision_replays_then_follows(self, store: ConfigStore) -> None:
        """A watch from start_revision replays the changes since then, then live ones, no gaps."""
        await store.set("k", "0")
        start = await store.set("k", "1")
        await store.set("unrelated", "x")
        await store.delete("k")
        watch = Collector(store.watch("k", start_revision=start))
        try:
            await watch.wait_for(lambda c: len(c) >= 2)
            await store.set("k", "live")
            await watch.wait_for(lambda c: len(c) >= 3)
            assert summary(watch.items) == [
                ("k", "0", "1", MODIFIED),
                ("k", "1", None, DELETED),
                ("k", None, "live", ADDED),
            ]
            assert watch.items[0].revision == start
        finally:
            await watch.close()

    async def test_start_revision_with_prefix_replays_in_revision_order(
        self, store: ConfigStore
    ) -> None:
        """A prefix replay interleaves keys in the order the writes happened."""
        start = await store.set("p/a", "1")
        await store.set("p/b", "1")
        await store.set("q", "ignored")
        await store.set("p/a", "2")
        watch = Collector(store.watch("p/", prefix=True, start_revision=start))
        try:
            await watch.wait_for(lambda c: len(c) >= 3)
            assert summary(watch.items) == [
                ("p/a", None, "1", ADDED),
                ("p/b", None, "1", ADDED),
                ("p/a", "1", "2", MODIFIED),
            ]
        finally:
            await watch.close()

    async def test_watch_sees_changes_from_another_client(
        self, store: ConfigStore, other_store: ConfigStore
    ) -> None:
        """A write through another client reaches this client's watch."""
        start = await store.set("shared", "mine")
        watch = Collector(store.watch("shared", start_revision=start + 1))
        try:
            await other_store.set("shared", "theirs")
            await watch.wait_for(lambda c: len(c) >= 1)
            assert summary(watch.items) == [("shared", "mine", "theirs", MODIFIED)]
            entry = await other_store.get("shared")
            assert entry is not None and entry.revision == watch.items[0].revision
        finally:
            await watch.close()

    async def test_replay_from_before_the_kept_history_raises_watch_compacted(
        self, compacting_store: ConfigStore
    ) -> None:
        """A replay needing changes no longer kept raises WatchCompacted, never skips them."""
        store = compacting_store
        revisions = [await store.set("k", str(n)) for n in range(HISTORY_LIMIT + 5)]
        await store.set("other", "x")
        await self.forget_history(store, revisions[-1])
        for key, prefix in (("k", False), ("", True)):
            watch = store.watch(key, prefix=prefix, start_revision=revisions[0])
            with pytest.raises(WatchCompacted) as caught:
                await asyncio.wait_for(anext(watch), DEADLINE)
            await watch.aclose()
            compact_revision = caught.value.compact_revision
            assert revisions[0] < compact_revision <= revisions[-1]
        watch = Collector(store.watch("k", start_revision=compact_revision))
        try:
            items = await watch.wait_for(lambda c: bool(c) and c[-1].revision == revisions[-1])
            assert [c.revision for c in items] == [r for r in revisions if r >= compact_revision]
            assert items[-1].new_value == str(HISTORY_LIMIT + 4)
        finally:
            await watch.close()

    # -- bad input ----------------------------------------------------------------

    async def test_bad_input_is_a_config_error(self, store: ConfigStore) -> None:
        """Empty keys, non-string values and negative revisions are refused clearly."""
        with pytest.raises(ConfigError, match="key"):
            await store.set("", "x")
        with pytest.raises(ConfigError, match="value"):
            await store.set("k", 5)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="expected_revision"):
            await store.compare_and_set("k", "x", expected_revision=-1)
        with pytest.raises(ConfigError, match="limit"):
            await store.history("k", limit=0)
        assert await store.get_all("") == {}
