"""``SqliteConfigStore``: the config center in one SQLite file shared by many processes.

Every write is one ``BEGIN IMMEDIATE`` transaction that bumps the store-wide
revision (a counter row), updates ``config_entries`` and appends to
``config_log`` — the change log that serves ``history`` and watches. The log
keeps the last 100 changes of each key (older ones are trimmed in the same
transaction), so ``history`` and ``start_revision`` replay reach that far.

A watch remembers the last revision it delivered and, whenever the change
feed (polled every 25 ms) says the revision moved, reads the log after it:
changes made by any process reach it in order, and none is skipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from typing import Self

from qanat.backends._common import (
    HISTORY_LIMIT,
    check_key,
    check_limit,
    check_revision,
    check_value,
)
from qanat.backends.sqlite_db import ChangeFeed, SqliteDb, bump, counter
from qanat.errors import BackendError
from qanat.ports import ChangeType, ConfigChange, ConfigEntry

_COUNTER = "config"
_COLUMNS = "key, old_value, new_value, type, revision"


def _change(row: tuple[str, str | None, str | None, str, int]) -> ConfigChange:
    key, old, new, kind, revision = row
    return ConfigChange(key, old, new, ChangeType(kind), revision)


def _write(conn: sqlite3.Connection, *, key: str, value: str | None, expected: int | None) -> int:
    """Write (or, with ``value=None``, delete) ``key``; 0 if ``expected`` or absence refused it."""
    row = conn.execute(
        "SELECT value, revision FROM config_entries WHERE key = ?", (key,)
    ).fetchone()
    old, current = (row[0], row[1]) if row else (None, 0)
    if expected is not None and current != expected:
        return 0
    if value is None and row is None:
        return 0
    revision = bump(conn, _COUNTER)
    if value is None:
        conn.execute("DELETE FROM config_entries WHERE key = ?", (key,))
        kind = ChangeType.DELETED
    else:
        conn.execute(
            "INSERT INTO config_entries (key, value, revision) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision",
            (key, value, revision),
        )
        kind = ChangeType.MODIFIED if row else ChangeType.ADDED
    conn.execute(
        f"INSERT INTO config_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (key, old, value, kind.value, revision),
    )
    conn.execute(  # keep the newest HISTORY_LIMIT changes of this key
        "DELETE FROM config_log WHERE key = ? AND revision <= (SELECT revision FROM config_log "
        "WHERE key = ? ORDER BY revision DESC LIMIT 1 OFFSET ?)",
        (key, key, HISTORY_LIMIT),
    )
    return revision


def _log_after(
    conn: sqlite3.Connection, *, key: str, prefix: bool, after: int
) -> list[ConfigChange]:
    """Logged changes to ``key`` (or under it) with a revision above ``after``, oldest first."""
    select = f"SELECT {_COLUMNS} FROM config_log WHERE revision > ?"
    if prefix:
        rows = conn.execute(
            f"{select} AND substr(key, 1, ?) = ? ORDER BY revision", (after, len(key), key)
        )
    else:
        rows = conn.execute(f"{select} AND key = ? ORDER BY revision", (after, key))
    return [_change(row) for row in rows]


class SqliteConfigStore:
    """A ``ConfigStore`` in a SQLite file; see the module docstring for the log and watches."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        self._feed = ChangeFeed(db, _COUNTER)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``sqlite:///path.db`` (created, with its directories, if missing)."""
        return cls(await SqliteDb.connect(url))

    async def _apply(self, key: str, value: str | None, expected: int | None) -> int:
        revision = await self._db.write(partial(_write, key=key, value=value, expected=expected))
        if revision:
            self._feed.notify()
        return revision

    async def get(self, key: str) -> ConfigEntry | None:
        """The key's value and last-modified revision, or None."""
        check_key(key)
        row = await self._db.read(
            lambda c: c.execute(
                "SELECT value, revision FROM config_entries WHERE key = ?", (key,)
            ).fetchone()
        )
        return ConfigEntry(key, row[0], row[1]) if row else None

    async def set(self, key: str, value: str) -> int:
        """Write ``value``; return the new store revision."""
        return await self._apply(check_key(key), check_value(value), None)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (a missing key uses no revision)."""
        return bool(await self._apply(check_key(key), None, None))

    async def get_all(self, prefix: str) -> dict[str, ConfigEntry]:
        """Every entry whose key starts with ``prefix``, in key order."""
        check_key(prefix, allow_empty=True)
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT key, value, revision FROM config_entries "
                "WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        )
        return {key: ConfigEntry(key, value, revision) for key, value, revision in rows}

    async def compare_and_set(self, key: str, value: str, *, expected_revision: int) -> bool:
        """Write only if the key was last modified at ``expected_revision`` (0: absent)."""
        check_key(key)
        check_value(value)
        check_revision(expected_revision, "expected_revision")
        return bool(await self._apply(key, value, expected_revision))

    async def history(self, key: str, *, limit: int = 20) -> list[ConfigChange]:
        """The key's most recent changes (at most 100 are kept), newest first."""
        check_key(key)
        check_limit(limit)
        rows = await self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM config_log WHERE key = ? ORDER BY revision DESC LIMIT ?",
                (key, limit),
            ).fetchall()
        )
        return [_change(row) for row in rows]

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[ConfigChange]:
        """Changes to ``key`` (or under it), replaying from ``start_revision`` first."""
        check_key(key, allow_empty=prefix)
        if start_revision is not None:
            check_revision(start_revision, "start_revision")
        event = self._feed.subscribe()
        try:
            if start_revision is None:
                seen = await self._db.read(lambda c: counter(c, _COUNTER))
            else:
                seen = start_revision - 1
            while not self._closed:
                event.clear()
                read = partial(_log_after, key=key, prefix=prefix, after=seen)
                try:
                    changes = await self._db.read(read)
                except BackendError:
                    if self.closed:
                        return
                    raise
                for change in changes:
                    seen = change.revision
                    yield change
                if not changes:
                    await event.wait()
        finally:
            self._feed.unsubscribe(event)

    async def close(self) -> None:
        """End this client's watches and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._feed.close()
        await self._db.close()


__all__ = ["SqliteConfigStore"]
