"""In-process config store: the reference ``ConfigStore`` and its test fake.

Re-exported by ``qanat.backends.memory``; see that module for namespaces.
Revisions are store-wide (one counter per namespace, as in etcd); each key
keeps its last 100 changes, which is how far ``history`` and a watch's
``start_revision`` replay reach.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Self

from qanat.backends._common import (
    HISTORY_LIMIT,
    check_key,
    check_limit,
    check_revision,
    check_value,
    keep_since,
    matches,
    memory_namespace,
)
from qanat.errors import BackendError
from qanat.ports import ChangeType, ConfigChange, ConfigEntry


@dataclass
class _ConfigState:
    """One config namespace: current entries, bounded per-key history, live watchers."""

    revision: int = 0
    entries: dict[str, ConfigEntry] = field(default_factory=dict)
    history: dict[str, deque[ConfigChange]] = field(default_factory=dict)
    watchers: list[tuple[str, bool, asyncio.Queue[ConfigChange | None]]] = field(
        default_factory=list
    )

    def write(self, key: str, value: str | None) -> int:
        old = self.entries.get(key)
        self.revision += 1
        if value is None:
            del self.entries[key]
            kind = ChangeType.DELETED
        else:
            self.entries[key] = ConfigEntry(key, value, self.revision)
            kind = ChangeType.ADDED if old is None else ChangeType.MODIFIED
        change = ConfigChange(key, old.value if old else None, value, kind, self.revision)
        self.history.setdefault(key, deque(maxlen=HISTORY_LIMIT)).append(change)
        for watched, prefix, queue in self.watchers:
            if matches(watched, prefix, key):
                queue.put_nowait(change)
        return self.revision


_CONFIGS: dict[str, _ConfigState] = {}


class MemoryConfigStore:
    """A ``ConfigStore`` held in this process, with the last 100 changes kept per key."""

    def __init__(self, namespace: str | None = None) -> None:
        if namespace is None:
            self._state = _ConfigState()
        else:
            self._state = _CONFIGS.setdefault(namespace, _ConfigState())
        self._queues: set[asyncio.Queue[ConfigChange | None]] = set()
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``memory://[name]``."""
        return cls(memory_namespace(url))

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this MemoryConfigStore is closed; open a new one")

    async def get(self, key: str) -> ConfigEntry | None:
        """The key's value and last-modified revision, or None."""
        self._check_open()
        return self._state.entries.get(check_key(key))

    async def set(self, key: str, value: str) -> int:
        """Write ``value``; return the new store revision."""
        self._check_open()
        return self._state.write(check_key(key), check_value(value))

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (a missing key uses no revision)."""
        self._check_open()
        if check_key(key) not in self._state.entries:
            return False
        self._state.write(key, None)
        return True

    async def get_all(self, prefix: str) -> dict[str, ConfigEntry]:
        """Every entry whose key starts with ``prefix``, in key order."""
        self._check_open()
        check_key(prefix, allow_empty=True)
        entries = self._state.entries
        return {k: entries[k] for k in sorted(entries) if k.startswith(prefix)}

    async def compare_and_set(self, key: str, value: str, *, expected_revision: int) -> bool:
        """Write only if the key was last modified at ``expected_revision`` (0: absent)."""
        self._check_open()
        check_key(key)
        check_value(value)
        check_revision(expected_revision, "expected_revision")
        current = self._state.entries.get(key)
        if (current.revision if current else 0) != expected_revision:
            return False
        self._state.write(key, value)
        return True

    async def history(self, key: str, *, limit: int = 20) -> list[ConfigChange]:
        """The key's most recent changes (at most 100 are kept), newest first."""
        self._check_open()
        check_key(key)
        check_limit(limit)
        return list(reversed(self._state.history.get(key, ())))[:limit]

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[ConfigChange]:
        """Changes to ``key`` (or under it), replaying from ``start_revision`` first."""
        self._check_open()
        check_key(key, allow_empty=prefix)
        queue: asyncio.Queue[ConfigChange | None] = asyncio.Queue()
        entry = (key, prefix, queue)
        # Subscribe before replaying: nothing can slip between the replay and the live feed.
        self._state.watchers.append(entry)
        self._queues.add(queue)
        try:
            seen = 0
            if start_revision is not None:
                check_revision(start_revision, "start_revision")
                logged = [
                    c
                    for k, changes in self._state.history.items()
                    if matches(key, prefix, k)
                    for c in changes
                ]
                for change in keep_since(logged, start_revision):
                    seen = change.revision
                    yield change
            while (live := await queue.get()) is not None:
                if live.revision > seen:
                    yield live
        finally:
            self._state.watchers.remove(entry)
            self._queues.discard(queue)

    async def close(self) -> None:
        """End this client's watches; the namespace's data stays for other clients."""
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)


__all__ = ["MemoryConfigStore"]
