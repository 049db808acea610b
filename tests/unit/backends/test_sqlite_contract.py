"""The SQLite backend against the Registry and ConfigStore contract suites.

Each test gets its own file; the "second client" is a second connection to the
same file, which is exactly what another process would have.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.config_contract import ConfigStoreContract
from tests.contract.registry_contract import RegistryContract

from qanat.backends.sqlite import SqliteConfigStore, SqliteRegistry
from qanat.ports import ConfigStore, Registry


class TestSqliteRegistry(RegistryContract):
    """A fresh file per test; a second client opens the same file."""

    @pytest.fixture(autouse=True)
    def _url(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/control.db"

    async def make_registry(self) -> Registry:
        return await SqliteRegistry.open(self.url)

    async def make_second_registry(self, first: Registry) -> Registry:
        return await SqliteRegistry.open(self.url)


class TestSqliteConfigStore(ConfigStoreContract):
    """A fresh file per test; a second client opens the same file."""

    @pytest.fixture(autouse=True)
    def _url(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/control.db"

    async def make_config_store(self) -> ConfigStore:
        return await SqliteConfigStore.open(self.url)

    async def make_second_config_store(self, first: ConfigStore) -> ConfigStore:
        return await SqliteConfigStore.open(self.url)
