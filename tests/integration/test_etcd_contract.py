"""The etcd backend against the contract suites on a real etcd, plus what only etcd does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aetcd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.contract.config_contract import MODIFIED, ConfigStoreContract
from tests.contract.registry_contract import RegistryContract
from tests.integration.conftest import PrivateEtcd, unique_prefix

from qanat.backends import open_config_store, open_registry
from qanat.backends._common import HISTORY_LIMIT
from qanat.backends._etcd_util import Backoff
from qanat.backends.etcd import EtcdConfigStore, EtcdRegistry, parse_etcd_url
from qanat.ports import ConfigStore, Registry

pytestmark = pytest.mark.integration


class TestEtcdRegistry(RegistryContract):
    """A fresh key prefix per test on the shared etcd; a second client opens the same URL."""

    ttl = 2.0  # etcd grants no lease shorter than ~2 s (1.5 x its election timeout)

    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_url: str) -> None:
        self.url = f"{etcd_url}?prefix={unique_prefix()}"

    async def make_registry(self) -> Registry:
        registry = await open_registry(self.url)
        assert isinstance(registry, EtcdRegistry)
        return registry

    async def make_second_registry(self, first: Registry) -> Registry:
        return await open_registry(self.url)


class TestEtcdConfigStore(ConfigStoreContract):
    """A fresh key prefix per test on the shared etcd; a second client opens the same URL."""

    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_url: str) -> None:
        self.url = f"{etcd_url}?prefix={unique_prefix()}"

    async def make_config_store(self) -> ConfigStore:
        store = await open_config_store(self.url)
        assert isinstance(store, EtcdConfigStore)
        return store

    async def make_second_config_store(self, first: ConfigStore) -> ConfigStore:
        return await open_config_store(self.url)

    @pytest.fixture
    async def compacting_store(self, private_etcd: PrivateEtcd) -> AsyncIterator[ConfigStore]:
        """A store on a private etcd: compacting the shared one would disturb other tests."""
        self.compact_endpoint = private_etcd.endpoint
        store = await open_config_store(private_etcd.url())
        yield store
        await store.close()

    async def forget_history(self, store: ConfigStore, revision: int) -> None:
        host, port = self.compact_endpoint.rsplit(":", 1)
        client = aetcd.Client(host, int(port), timeout=5)
        try:
            await client.compact(revision, physical=True)
        finally:
            await client.close()


# -- etcd-specific behaviour beyond the contract ---------------------------------


async def test_history_is_trimmed_and_old_values_survive_the_trim(shared_etcd_url: str) -> None:
    """After many writes history keeps the newest 100 changes, each with the right old value."""
    store = await EtcdConfigStore.open(shared_etcd_url)
    try:
        writes = 125  # a trim happens at the 125th write, leaving exactly 100 records
        revisions = [await store.set("k", str(n)) for n in range(writes)]
        changes = await store.history("k", limit=1000)
        assert len(changes) == HISTORY_LIMIT
        assert [c.new_value for c in changes] == [str(n) for n in reversed(range(25, writes))]
        assert [c.old_value for c in changes] == [str(n) for n in reversed(range(24, writes - 1))]
        assert [c.revision for c in changes] == list(reversed(revisions[25:]))
        settings = parse_etcd_url(shared_etcd_url)
        client = aetcd.Client(*settings.endpoints[0])
        try:
            records = await client.get_prefix(f"{settings.prefix}/config-history/k\x00".encode())
            assert len(records) == HISTORY_LIMIT
        finally:
            await client.close()
    finally:
        await store.close()


async def test_writes_from_another_tool_are_seen_without_history(shared_etcd_url: str) -> None:
    """A value put straight into etcd (as etcdctl would) is read and watched like any other."""
    store = await EtcdConfigStore.open(shared_etcd_url)
    settings = parse_etcd_url(shared_etcd_url)
    client = aetcd.Client(*settings.endpoints[0])
    try:
        start = await store.set("k", "ours")
        await client.put(f"{settings.prefix}/config/k".encode(), b"theirs")
        entry = await store.get("k")
        assert entry is not None and (entry.value, entry.revision > start) == ("theirs", True)
        watch = store.watch("k", start_revision=start + 1)
        change = await anext(watch)
        await watch.aclose()
        assert (change.old_value, change.new_value, change.type) == ("ours", "theirs", MODIFIED)
        assert [c.new_value for c in await store.history("k")] == ["ours"]
    finally:
        await client.close()
        await store.close()


@given(
    base=st.floats(0.001, 1.0),
    cap=st.floats(0.001, 10.0),
    steps=st.integers(1, 60),
)
def test_backoff_stays_within_its_exponential_envelope(base: float, cap: float, steps: int) -> None:
    """Each backoff delay lies in [0, min(cap, base * 2**n)], and reset starts over."""
    backoff = Backoff(base=base, cap=cap)
    for n in range(steps):
        assert 0.0 <= backoff.next() <= min(cap, base * 2 ** min(n, 30))
    backoff.reset()
    assert backoff.next() <= min(cap, base)
