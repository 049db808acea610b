"""``EtcdConfigStore``: the config center on a real etcd cluster (details: docs/etcd.md).

``P/config/<key>`` holds the value; revisions are etcd's (``mod_revision``);
``compare_and_set`` is one transaction comparing ``mod_revision`` (an absent
key compares as 0). History: each write through qanat is one transaction that
also puts a record ``P/config-history/<key> NUL <random>`` =
``{"t": type, "v": value}``; its ``create_revision`` is the change's revision
and the branch taken (``version == 0``: added) gives the type, so no write
reads first. Records (unlike etcd's MVCC history) know when a key was deleted
and survive compaction; each client trims a key's records to the last 100.
Watches are etcd's with ``prev_kv``; they resume after a broken stream and
raise ``WatchCompacted`` when etcd can no longer replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Self

from aetcd import rpc

from qanat.backends._common import (
    HISTORY_LIMIT,
    check_key,
    check_limit,
    check_revision,
    check_value,
)
from qanat.backends._etcd import ConnectionClosed, EtcdConnection, connect, watch_batches
from qanat.backends._etcd_util import (
    Backoff,
    compare_mod,
    compare_version,
    delete_op,
    prefix_end,
    put_op,
)
from qanat.errors import BackendError, BackendUnreachable
from qanat.ports import ChangeType, ConfigChange, ConfigEntry

_TRIM_EVERY = 25


class EtcdConfigStore:
    """A ``ConfigStore`` on etcd; see the module docstring for layout and history."""

    def __init__(self, conn: EtcdConnection) -> None:
        self._conn = conn
        self._root = f"{conn.settings.prefix}/config/"
        self._history_root = f"{conn.settings.prefix}/config-history/"
        self._writes: dict[str, int] = {}
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``etcd://host:port[,host:port...][?prefix=/ns]``; ``BackendUnreachable`` if down."""
        return cls(await connect(url))

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(
                f"this EtcdConfigStore for {self._conn.url} is closed; open a new one"
            )

    def _key(self, key: str) -> bytes:
        return (self._root + key).encode()

    def _record_prefix(self, key: str) -> bytes:
        return (self._history_root + key + "\x00").encode()

    def _record(self, key: str, kind: ChangeType, value: str | None) -> Any:
        name = self._record_prefix(key) + secrets.token_hex(8).encode()
        return put_op(name, json.dumps({"t": kind.value, "v": value}).encode())

    async def _txn(self, action: str, compare: Any, success: Any, failure: Any = ()) -> Any:
        req = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        return await self._conn.call("kvstub", "Txn", req, action)

    async def get(self, key: str) -> ConfigEntry | None:
        """The key's value and last-modified revision, or None."""
        self._check_open()
        req = rpc.RangeRequest(key=self._key(check_key(key)))
        found = await self._conn.call("kvstub", "Range", req, f"reading {key!r}")
        if not found.kvs:
            return None
        kv = found.kvs[0]
        return ConfigEntry(key, kv.value.decode(), int(kv.mod_revision))

    async def set(self, key: str, value: str) -> int:
        """Write ``value``; return the new store revision."""
        self._check_open()
        k, v = self._key(check_key(key)), check_value(value).encode()
        done = await self._txn(
            f"writing {key!r}",
            [compare_version(k, rpc.Compare.EQUAL, 0)],
            [put_op(k, v), self._record(key, ChangeType.ADDED, value)],
            [put_op(k, v), self._record(key, ChangeType.MODIFIED, value)],
        )
        await self._wrote(key)
        return int(done.header.revision)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (a missing key uses no revision)."""
        self._check_open()
        k = self._key(check_key(key))
        done = await self._txn(
            f"deleting {key!r}",
            [compare_version(k, rpc.Compare.GREATER, 0)],
            [delete_op(k), self._record(key, ChangeType.DELETED, None)],
        )
        if done.succeeded:
            await self._wrote(key)
        return bool(done.succeeded)

    async def get_all(self, prefix: str) -> dict[str, ConfigEntry]:
        """Every entry whose key starts with ``prefix``, in key order."""
        self._check_open()
        start = self._key(check_key(prefix, allow_empty=True))
        req = rpc.RangeRequest(key=start, range_end=prefix_end(start))
        found = await self._conn.call("kvstub", "Range", req, f"listing {prefix!r}")
        skip = len(self._root.encode())
        entries = {}
        for kv in found.kvs:
            key = kv.key[skip:].decode()
            entries[key] = ConfigEntry(key, kv.value.decode(), int(kv.mod_revision))
        return dict(sorted(entries.items()))

    async def compare_and_set(self, key: str, value: str, *, expected_revision: int) -> bool:
        """Write only if the key was last modified at ``expected_revision`` (0: absent)."""
        self._check_open()
        k, v = self._key(check_key(key)), check_value(value).encode()
        check_revision(expected_revision, "expected_revision")
        kind = ChangeType.ADDED if expected_revision == 0 else ChangeType.MODIFIED
        done = await self._txn(
            f"compare-and-set of {key!r}",
            [compare_mod(k, expected_revision)],
            [put_op(k, v), self._record(key, kind, value)],
        )
        if done.succeeded:
            await self._wrote(key)
        return bool(done.succeeded)

    async def _records(self, key: str) -> list[Any]:
        """The key's history records, oldest first."""
        start = self._record_prefix(key)
        req = rpc.RangeRequest(
            key=start,
            range_end=prefix_end(start),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
        )
        found = await self._conn.call("kvstub", "Range", req, f"reading the history of {key!r}")
        return list(found.kvs)

    async def _wrote(self, key: str) -> None:
        """Count a write; every ``_TRIM_EVERY`` writes, trim the key's history to the limit.

        Best effort: the write already happened, so a failed trim must not fail it
        (the next trim catches up).
        """
        count = self._writes.get(key, 0) + 1
        self._writes[key] = count % _TRIM_EVERY
        if count < _TRIM_EVERY:
            return
        with contextlib.suppress(BackendError):
            await self._trim(key)

    async def _trim(self, key: str) -> None:
        records = await self._records(key)
        extra = records[: max(0, len(records) - HISTORY_LIMIT)]
        for i in range(0, len(extra), 64):  # etcd allows 128 operations per transaction
            await self._txn(
                f"trimming the history of {key!r}",
                [],
                [delete_op(kv.key) for kv in extra[i : i + 64]],
            )

    async def history(self, key: str, *, limit: int = 20) -> list[ConfigChange]:
        """The key's most recent changes (at most 100 are kept), newest first."""
        self._check_open()
        check_key(key)
        limit = min(check_limit(limit), HISTORY_LIMIT)
        records = (await self._records(key))[-HISTORY_LIMIT - 1 :]
        changes, previous = [], None
        for index, kv in enumerate(records):
            data = json.loads(kv.value)
            kind, value = ChangeType(data["t"]), data["v"]
            old = None if kind is ChangeType.ADDED else previous
            if index == 0 and kind is not ChangeType.ADDED and len(records) <= limit:
                old = await self._value_before(key, int(kv.create_revision))
            changes.append(ConfigChange(key, old, value, kind, int(kv.create_revision)))
            previous = value
        return list(reversed(changes))[:limit]

    async def _value_before(self, key: str, revision: int) -> str | None:
        """The key's value just before ``revision``, from etcd's MVCC (None if compacted)."""
        req = rpc.RangeRequest(key=self._key(key), revision=revision - 1)
        try:
            found = await self._conn.call("kvstub", "Range", req, f"reading {key!r} at a revision")
        except BackendUnreachable:
            raise
        except BackendError:  # compacted: the old value is gone
            return None
        return found.kvs[0].value.decode() if found.kvs else None

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[ConfigChange]:
        """Changes to ``key`` (or under it), replaying from ``start_revision`` first.

        Survives etcd restarts (resumes after the last revision delivered);
        raises ``WatchCompacted`` when etcd can no longer replay that far.
        """
        self._check_open()
        check_key(key, allow_empty=prefix)
        k = self._key(key)
        if start_revision is None:
            # Pin the start now, so a reconnect before the first change loses nothing.
            req = rpc.RangeRequest(key=k, count_only=True)
            try:
                found = await self._conn.call("kvstub", "Range", req, "starting a watch")
            except ConnectionClosed:
                return
            start_revision = int(found.header.revision) + 1
        revision = check_revision(start_revision, "start_revision")
        end = prefix_end(k) if prefix else b""
        skip = len(self._root.encode())
        backoff = Backoff()
        while True:
            endpoint = self._conn.current
            try:
                async with contextlib.aclosing(
                    watch_batches(self._conn, k, end, revision, prev_kv=True)
                ) as batches:
                    async for events in batches:
                        backoff.reset()
                        for event in events:
                            revision = int(event.kv.mod_revision) + 1
                            yield _change(event, skip)
                return  # the stream ends quietly only when the store is closed
            except ConnectionClosed:
                return
            except BackendUnreachable:
                if self._conn.closed:
                    return
                self._conn.failed(endpoint)
                await asyncio.sleep(backoff.next())

    async def close(self) -> None:
        """End this client's watches and close its connection. Idempotent."""
        self._closed = True
        await self._conn.close()


def _change(event: Any, skip: int) -> ConfigChange:
    key = event.kv.key[skip:].decode()
    old = event.prev_kv.value.decode() if event.HasField("prev_kv") else None
    revision = int(event.kv.mod_revision)
    if event.type == rpc.Event.DELETE:
        return ConfigChange(key, old, None, ChangeType.DELETED, revision)
    kind = ChangeType.ADDED if event.kv.version == 1 else ChangeType.MODIFIED
    return ConfigChange(key, old, event.kv.value.decode(), kind, revision)


__all__ = ["EtcdConfigStore"]
