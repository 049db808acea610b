"""The etcd backend against the Registry and ConfigStore contract suites, on a real etcd."""

from __future__ import annotations

import pytest
from tests.contract.config_contract import ConfigStoreContract
from tests.contract.registry_contract import RegistryContract
from tests.integration.conftest import unique_prefix

from qanat.backends import open_config_store, open_registry
from qanat.backends.etcd import EtcdConfigStore, EtcdRegistry
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
