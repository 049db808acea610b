"""In-process config store: the reference ``ConfigStore`` and its test fake.

Re-exported by ``qanat.backends.memory``; see that module for namespaces.
Revisions are store-wide (one counter per namespace, as in etcd); each key
keeps its last 100 changes, and a deleted key's changes are dropped once it
has stayed deleted for 1,000 revisions (``COMPACT_DELETED_AFTER``). That is
how far ``history`` and a watch's ``start_revision`` replay reach; a replay
that would need a dropped change raises ``WatchCompacted`` (as etcd does
after compaction) instead of silently skipping it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Self

from qanat.backends._common import (
    COMPACT_DELETED_AFTER,
    HISTORY_LIMIT,
    check_key,
    check_limit,
    check_revision,
    check_value,
    compacted_error,
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
    trimmed: dict[str, int] = field(default_factory=dict)  # key -> newest revision dropped
    compacted: int = 0  # newest revision dropped with a deleted key's whole history
    deletions: deque[ConfigChange] = field(default_factory=deque)  # to compact, oldest first
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
        kept = self.history.setdefault(key, deque(maxlen=HISTORY_LIMIT))
        if len(kept) == HISTORY_LIMIT:
            self.trimmed[key] = kept[0].revision  # about to fall off the end
        kept.append(change)
        if kind is ChangeType.DELETED:
            self.deletions.append(change)
        self._compact()
        for watched, prefix, queue in self.watchers:
            if matches(watched, prefix, key):
                queue.put_nowait(change)
        return self.revision

    def _compact(self) -> None:
        """Drop the history of keys deleted ``COMPACT_DELETED_AFTER`` revisions ago."""
        cutoff = self.revision - COMPACT_DELETED_AFTER
        while self.deletions and self.deletions[0].revision <= cutoff:
            gone = self.deletions.popleft()
            kept = self.history.get(gone.key)
            if gone.key not in self.entries and kept and kept[-1] is gone:
                del self.history[gone.key]
                self.trimmed.pop(gone.key, None)
                self.compacted = max(self.compacted, gone.revision)

    def replay(self, key: str, prefix: bool, start_revision: int) -> list[ConfigChange]:
        """The kept changes since ``start_revision``; ``WatchCompacted`` if some are gone."""
        floor = max(
            (r for k, r in self.trimmed.items() if matches(key, prefix, k)),
            default=0,
        )
        floor = max(floor, self.compacted)
        if floor and start_revision <= floor:
            raise compacted_error(key, prefix, start_revision, floor, "the memory store")
        logged = [c for k, changes in self.history.items() if matches(key, prefix, k)
                  for c in changes]  # fmt: skip
        return keep_since(logged, start_revision)


_CONFIGS: dict[str, _ConfigState] = {}


class MemoryConfigStore:
    """A ``ConfigStore`` held in this process; see the module docstring for what is kept."""

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
                for change in self._state.replay(key, prefix, start_revision):
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
