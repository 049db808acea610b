"""The memory backend against the Registry and ConfigStore contract suites."""

from __future__ import annotations

import uuid

from tests.contract.config_contract import ConfigStoreContract
from tests.contract.registry_contract import RegistryContract

from qanat.backends.memory import MemoryConfigStore, MemoryRegistry
from qanat.ports import ConfigStore, Registry


class TestMemoryRegistry(RegistryContract):
    """A fresh named namespace per test; a second client opens the same name."""

    async def make_registry(self) -> Registry:
        self.namespace = f"contract-{uuid.uuid4().hex}"
        return MemoryRegistry(self.namespace)

    async def make_second_registry(self, first: Registry) -> Registry:
        return MemoryRegistry(self.namespace)


class TestMemoryConfigStore(ConfigStoreContract):
    """A fresh named namespace per test; a second client opens the same name."""

    async def make_config_store(self) -> ConfigStore:
        self.namespace = f"contract-{uuid.uuid4().hex}"
        return MemoryConfigStore(self.namespace)

    async def make_second_config_store(self, first: ConfigStore) -> ConfigStore:
        return MemoryConfigStore(self.namespace)
