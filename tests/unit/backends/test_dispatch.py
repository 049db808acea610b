"""URL dispatch: ``open_registry`` / ``open_config_store`` pick the backend by scheme."""

from __future__ import annotations

from pathlib import Path

import pytest

from qanat.backends import open_config_store, open_registry
from qanat.backends.memory import MemoryConfigStore, MemoryRegistry
from qanat.backends.sqlite import SqliteConfigStore, SqliteRegistry
from qanat.errors import BackendUnreachable, ConfigError
from qanat.ports import ConfigStore, Instance, Registry


async def test_memory_name_is_a_shared_namespace() -> None:
    """Two opens of memory://name share state; memory:// alone is private."""
    first, second = (
        await open_config_store("memory://dispatch-a"),
        await open_config_store("memory://dispatch-a"),
    )
    private = await open_config_store("memory://")
    assert isinstance(first, MemoryConfigStore)
    await first.set("k", "v")
    entry = await second.get("k")
    assert entry is not None and entry.value == "v"
    assert await private.get("k") is None
    for store in (first, second, private):
        await store.close()


async def test_memory_registry_namespace_is_shared() -> None:
    """Two registries opened on memory://name see each other's instances."""
    one, two = (
        await open_registry("memory://dispatch-r"),
        await open_registry("memory://dispatch-r"),
    )
    assert isinstance(one, MemoryRegistry) and isinstance(two, Registry)
    await one.register(Instance("a", "svc", "127.0.0.1", 80), ttl=30)
    assert [i.id for i in await two.discover("svc")] == ["a"]
    await one.close()
    assert await two.discover("svc") == []
    await two.close()


@pytest.mark.parametrize("relative", [True, False])
async def test_sqlite_creates_parent_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    """sqlite:///relative and sqlite:////absolute paths work and their directories are created."""
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///deep/er/control.db" if relative else f"sqlite:///{tmp_path}/abs/control.db"
    store: ConfigStore = await open_config_store(url)
    registry = await open_registry(url)
    assert isinstance(store, SqliteConfigStore) and isinstance(registry, SqliteRegistry)
    await store.set("k", "v")
    await store.close()
    await registry.close()
    assert (tmp_path / ("deep/er" if relative else "abs") / "control.db").is_file()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("zookeeper://localhost:2181", ["unknown scheme 'zookeeper'", "sqlite://", "etcd://"]),
        ("just-a-path.db", ["not a backend URL", "sqlite:///"]),
        ("sqlite://host/x.db", ["names a host"]),
        ("sqlite:///:memory:", ["does not name a file", "memory://"]),
        ("sqlite:///", ["does not name a file"]),
    ],
)
async def test_bad_urls_are_config_errors_that_say_what_is_allowed(
    url: str, words: list[str]
) -> None:
    """A malformed URL or unknown scheme raises ConfigError explaining what is allowed."""
    for opener in (open_registry, open_config_store):
        with pytest.raises(ConfigError) as info:
            await opener(url)  # type: ignore[operator]
        for word in words:
            assert word in str(info.value)


async def test_unopenable_sqlite_file_is_backend_unreachable(tmp_path: Path) -> None:
    """A SQLite path that cannot be created raises BackendUnreachable naming the URL."""
    (tmp_path / "file").write_text("a file, not a directory")
    url = f"sqlite:///{tmp_path}/file/control.db"
    with pytest.raises(BackendUnreachable, match=r"file/control\.db"):
        await open_registry(url)
