"""Backends for qanat's ports, chosen by URL.

``open_registry(url)`` and ``open_config_store(url)`` pick the backend from the
URL's scheme and import it only then, so an optional dependency (``aetcd`` for
etcd) is needed only by those who use it:

==========================================  =====================================
``memory://[name]``                         in-process; two opens of a name share state
``sqlite:///relative/path.db``              one file shared by processes on a machine
``sqlite:////absolute/path.db``             (parent directories are created)
``etcd://host:port[,host:port...]``         a real etcd cluster
==========================================  =====================================
"""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from qanat.errors import ConfigError
from qanat.ports import ConfigStore, Registry

# scheme -> (module, registry class, config store class)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "memory": ("qanat.backends.memory", "MemoryRegistry", "MemoryConfigStore"),
    "sqlite": ("qanat.backends.sqlite", "SqliteRegistry", "SqliteConfigStore"),
    "etcd": ("qanat.backends.etcd", "EtcdRegistry", "EtcdConfigStore"),
}

DEFAULT_BACKEND = "sqlite:///.qanat/control.db"
"""The embedded default for discovery and config (relative to the working directory)."""


def _backend_class(url: str, which: int) -> Any:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"{url!r} is not a backend URL; expected one of "
            f"{', '.join(s + '://…' for s in _BACKENDS)} (e.g. {DEFAULT_BACKEND})",
            source="backend URL",
        )
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _BACKENDS:
        raise ConfigError(
            f"unknown scheme {scheme!r} in {url!r}; allowed schemes: "
            f"{', '.join(s + '://' for s in _BACKENDS)}",
            source="backend URL",
        )
    module_name = _BACKENDS[scheme][0]
    try:
        module = import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise ConfigError(
                f"the {scheme}:// backend is not part of this qanat build", source="backend URL"
            ) from exc
        raise ConfigError(
            f"the {scheme}:// backend needs an optional dependency ({exc.name}); "
            f"install it with: pip install 'qanat[{scheme}]'",
            source="backend URL",
        ) from exc
    return getattr(module, _BACKENDS[scheme][which])


async def open_registry(url: str) -> Registry:
    """Open the ``Registry`` named by ``url``; see the module docstring for the schemes.

    Raises ``ConfigError`` for a malformed URL or unknown scheme and
    ``BackendUnreachable`` (naming the URL) when the backend cannot be reached.
    """
    registry: Registry = await _backend_class(url, 1).open(url)
    return registry


async def open_config_store(url: str) -> ConfigStore:
    """Open the ``ConfigStore`` named by ``url``; errors as for ``open_registry``."""
    store: ConfigStore = await _backend_class(url, 2).open(url)
    return store


__all__ = ["DEFAULT_BACKEND", "open_config_store", "open_registry"]
